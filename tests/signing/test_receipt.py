"""signing.receipt: the c2sp.org/tlog-proof@v1 text format."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.errors import ProofError
from signing.merkle import (
    CompactRange,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    verify_inclusion,
)
from signing.receipt import HEADER, TlogProof

# The example of https://c2sp.org/tlog-proof (signatures elided as in the spec).
C2SP_EXAMPLE = """\
c2sp.org/tlog-proof@v1
extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ
index 73894
gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=
B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=
EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=
RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=
AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=

example.com/fancylog
109482
sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=

— example.com/fancylog hI2DJw[...]1roloI=
— witness1.example mJirIklj[...]qY9v2B/5bg==
— witness2.example TnKKVHLX[...]xwYwrSjgow==
— witness3.example S4X82uH5[...]3oEcROGLFQ==
"""

CHECKPOINT = (
    "example.com/log\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log sig==\n"
)
H1 = hashlib.sha256(b"1").digest()
H2 = hashlib.sha256(b"2").digest()
B1 = base64.b64encode(H1).decode()
B2 = base64.b64encode(H2).decode()
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Same 32 bytes, but a padding bit set in the last character: decodes, not canonical.
NON_CANONICAL = B1[:-2] + _ALPHABET[_ALPHABET.index(B1[-2]) ^ 1] + "="
URLSAFE = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()


def test_c2sp_example_parses_and_reformats_identically() -> None:
    p = TlogProof.parse(C2SP_EXAMPLE)
    assert p.index == 73894
    assert len(p.proof) == 5 and all(len(h) == 32 for h in p.proof)
    assert p.proof[0] == base64.b64decode("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=")
    assert p.extra is not None and p.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert p.checkpoint.startswith("example.com/fancylog\n109482\n")
    assert p.checkpoint.endswith("3oEcROGLFQ==\n")
    assert p.format() == C2SP_EXAMPLE


def test_layout_without_extra() -> None:
    p = TlogProof(index=7, proof=(H1, H2), checkpoint=CHECKPOINT)
    assert p.format() == f"{HEADER}\nindex 7\n{B1}\n{B2}\n\n{CHECKPOINT}"
    assert TlogProof.parse(p.format()) == p


def test_layout_empty_proof_and_empty_extra() -> None:
    p = TlogProof(index=0, proof=(), checkpoint=CHECKPOINT, extra=b"")
    assert p.format() == f"{HEADER}\nextra \nindex 0\n\n{CHECKPOINT}"
    back = TlogProof.parse(p.format())
    assert back == p and back.extra == b""


def test_list_proof_is_stored_as_tuple() -> None:
    p = TlogProof(index=1, proof=[H1], checkpoint=CHECKPOINT)  # type: ignore[arg-type]
    assert p.proof == (H1,)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=64),
    st.text(min_size=1),
    st.none() | st.binary(max_size=100),
)
def test_round_trip(index: int, proof: list[bytes], checkpoint: str, extra: bytes | None) -> None:
    p = TlogProof(index=index, proof=tuple(proof), checkpoint=checkpoint, extra=extra)
    assert TlogProof.parse(p.format()) == p


def test_receipt_carries_a_verifiable_inclusion_proof() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(21)]
    cr = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {(0, i): h for i, h in enumerate(leaves)}
    for h in leaves:
        nodes.update(((lvl, idx), nh) for lvl, idx, nh in cr.append(h))
    assert len(cr.hashes) == len(perfect_subtrees(0, 21))

    def fetch(coords: Collection[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        return {c: nodes[c] for c in coords}

    root = cr.root()
    checkpoint = f"test/log\n21\n{base64.b64encode(root).decode()}\n\n— test/log sig==\n"
    text = TlogProof(index=13, proof=tuple(inclusion_proof(13, 21, fetch)), checkpoint=checkpoint)
    parsed = TlogProof.parse(text.format())
    verify_inclusion(leaves[13], parsed.index, 21, parsed.proof, root)


GOOD = f"{HEADER}\nindex 5\n{B1}\n\n{CHECKPOINT}"

# name: (text, fragment of the error message)
MALFORMED: dict[str, tuple[str, str]] = {
    "empty text": ("", "header"),
    "missing header": (f"index 5\n{B1}\n\n{CHECKPOINT}", "header"),
    "wrong header version": (GOOD.replace("@v1", "@v2", 1), "header"),
    "header only": (HEADER, "header"),
    "header with CR": (GOOD.replace(f"{HEADER}\n", f"{HEADER}\r\n", 1), "header"),
    "leading blank line": ("\n" + GOOD, "header"),
    "missing index": (f"{HEADER}\n{B1}\n\n{CHECKPOINT}", "index"),
    "header then nothing": (f"{HEADER}\n", "index"),
    "index leading zero": (GOOD.replace("index 5", "index 05"), "leading zeros"),
    "index double zero": (GOOD.replace("index 5", "index 00"), "leading zeros"),
    "index negative": (GOOD.replace("index 5", "index -5"), "ASCII decimal"),
    "index plus sign": (GOOD.replace("index 5", "index +5"), "ASCII decimal"),
    "index underscore": (GOOD.replace("index 5", "index 1_0"), "ASCII decimal"),
    "index two spaces": (GOOD.replace("index 5", "index  5"), "ASCII decimal"),
    "index trailing space": (GOOD.replace("index 5", "index 5 "), "ASCII decimal"),
    "index empty": (GOOD.replace("index 5", "index "), "ASCII decimal"),
    "index non-ASCII digit": (GOOD.replace("index 5", "index \u0665"), "ASCII decimal"),
    "index beyond uint64": (GOOD.replace("index 5", f"index {2**64}"), "2**64-1"),
    "index capitalised": (GOOD.replace("index 5", "Index 5"), "index <N>"),
    "hash bad base64": (GOOD.replace(B1, "!" + B1[1:]), "not valid base64"),
    "hash unpadded": (GOOD.replace(B1, B1.rstrip("=")), "not valid base64"),
    "hash non-canonical bits": (GOOD.replace(B1, NON_CANONICAL), "not canonical"),
    "hash urlsafe alphabet": (GOOD.replace(B1, URLSAFE), "not valid base64"),
    "hash trailing space": (GOOD.replace(B1, B1 + " "), "not valid base64"),
    "hash 31 bytes": (GOOD.replace(B1, base64.b64encode(H1[:31]).decode()), "31 bytes"),
    "hash 33 bytes": (GOOD.replace(B1, base64.b64encode(H1 + b"\x00").decode()), "33 bytes"),
    "missing blank line": (f"{HEADER}\nindex 5\n{B1}\n", "empty line"),
    "no final newline": (f"{HEADER}\nindex 5\n{B1}", "empty line"),
    "checkpoint glued to proof": (f"{HEADER}\nindex 5\n{B1}\n{CHECKPOINT}", "proof hash 1"),
    "empty checkpoint": (f"{HEADER}\nindex 5\n{B1}\n\n", "empty checkpoint"),
    "extra bad base64": (f"{HEADER}\nextra @@@@\nindex 5\n\n{CHECKPOINT}", "extra data"),
    "extra unpadded": (f"{HEADER}\nextra YQ\nindex 5\n\n{CHECKPOINT}", "extra data"),
    "extra without index": (f"{HEADER}\nextra YQ==\n", "index"),
    "extra after index": (f"{HEADER}\nindex 5\nextra YQ==\n\n{CHECKPOINT}", "proof hash 0"),
    "extra twice": (f"{HEADER}\nextra YQ==\nextra YQ==\nindex 5\n\n{CHECKPOINT}", "index <N>"),
}


def test_malformed_cases_are_distinct_from_good() -> None:
    TlogProof.parse(GOOD)  # the base every variant is derived from is valid
    for name, (text, _) in MALFORMED.items():
        assert text != GOOD, name


@pytest.mark.parametrize(("text", "message"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_is_refused(text: str, message: str) -> None:
    with pytest.raises(ProofError, match=re.escape(message)):
        TlogProof.parse(text)


def test_parse_rejects_bytes() -> None:
    with pytest.raises(ProofError):
        TlogProof.parse(GOOD.encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"index": -1, "proof": (), "checkpoint": CHECKPOINT},
        {"index": 2**64, "proof": (), "checkpoint": CHECKPOINT},
        {"index": True, "proof": (), "checkpoint": CHECKPOINT},
        {"index": 1, "proof": (H1[:31],), "checkpoint": CHECKPOINT},
        {"index": 1, "proof": ("x" * 32,), "checkpoint": CHECKPOINT},
        {"index": 1, "proof": (), "checkpoint": ""},
        {"index": 1, "proof": (), "checkpoint": CHECKPOINT, "extra": "text"},
    ],
    ids=["negative", "too-big", "bool", "short-hash", "str-hash", "empty-checkpoint", "str-extra"],
)
def test_invalid_construction_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ProofError):
        TlogProof(**kwargs)  # type: ignore[arg-type]
