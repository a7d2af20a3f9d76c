"""Transparency log proofs in the c2sp.org/tlog-proof@v1 text format.

A receipt bundles an entry's index, its Merkle inclusion proof and the signed
checkpoint (a signed note) it is included under::

    c2sp.org/tlog-proof@v1
    extra <base64>            (optional)
    index <N>
    <base64 hash>             (zero or more, leaf's sibling first)
                              (empty line)
    <checkpoint, verbatim to the end of the text>

Parsing is strict; every refusal raises ``ProofError``. This module checks only
the layout: the checkpoint's signatures and the inclusion proof itself are
verified elsewhere (see ``signing.merkle.verify_inclusion``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from signing.errors import ProofError
from signing.merkle import HASH_SIZE

__all__ = ["HEADER", "TlogProof"]

HEADER = "c2sp.org/tlog-proof@v1"
_EXTRA = "extra "
_INDEX = "index "
_MAX_INDEX = 2**64 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, canonical, no whitespace."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise ProofError(f"{what} is not valid base64: {text!r}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise ProofError(f"{what} is not canonical padded base64: {text!r}")
    return raw


@dataclass(frozen=True, slots=True)
class TlogProof:
    """One c2sp.org/tlog-proof@v1 receipt.

    ``proof`` is the inclusion proof, leaf's sibling first; ``checkpoint`` is the
    signed note exactly as issued; ``extra`` is opaque, unauthenticated data.
    """

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ProofError(f"index must be an int, got {type(self.index).__name__}")
        if not 0 <= self.index <= _MAX_INDEX:
            raise ProofError(f"index {self.index} is outside 0..2**64-1")
        proof = tuple(self.proof)
        for i, h in enumerate(proof):
            if not isinstance(h, bytes):
                raise ProofError(f"proof[{i}] must be bytes, got {type(h).__name__}")
            if len(h) != HASH_SIZE:
                raise ProofError(f"proof[{i}] has {len(h)} bytes, want {HASH_SIZE}")
        object.__setattr__(self, "proof", proof)
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise ProofError("checkpoint is empty")
        if self.extra is not None and not isinstance(self.extra, bytes):
            raise ProofError(f"extra must be bytes or None, got {type(self.extra).__name__}")

    def format(self) -> str:
        """The receipt as c2sp.org/tlog-proof@v1 text."""
        lines = [HEADER]
        if self.extra is not None:
            lines.append(_EXTRA + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"{_INDEX}{self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.proof)
        lines.append("")  # the empty line before the checkpoint
        return "\n".join(lines) + "\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        """Parse c2sp.org/tlog-proof@v1 text; raise ``ProofError`` on any deviation."""
        if not isinstance(text, str):
            raise ProofError(f"tlog proof must be text, got {type(text).__name__}")
        pos = 0

        def next_line(missing: str) -> str:
            nonlocal pos
            cut = text.find("\n", pos)
            if cut < 0:
                raise ProofError(missing)
            line = text[pos:cut]
            pos = cut + 1
            return line

        if next_line("tlog proof ends before the end of its header line") != HEADER:
            raise ProofError(f"tlog proof does not start with the header line {HEADER!r}")

        line = next_line("tlog proof ends before its index line")
        extra: bytes | None = None
        if line.startswith(_EXTRA):
            extra = _b64decode(line[len(_EXTRA) :], "extra data")
            line = next_line("tlog proof ends before its index line")

        if not line.startswith(_INDEX):
            raise ProofError(f"expected 'index <N>' line, got {line!r}")
        digits = line[len(_INDEX) :]
        if not _DECIMAL.fullmatch(digits):
            raise ProofError(f"index {digits!r} is not an ASCII decimal without leading zeros")
        index = int(digits)
        if index > _MAX_INDEX:
            raise ProofError(f"index {digits} is beyond 2**64-1")

        hashes: list[bytes] = []
        while True:
            line = next_line("tlog proof ends before the empty line that precedes the checkpoint")
            if line == "":
                break
            h = _b64decode(line, f"proof hash {len(hashes)}")
            if len(h) != HASH_SIZE:
                raise ProofError(f"proof hash {len(hashes)} has {len(h)} bytes, want {HASH_SIZE}")
            hashes.append(h)

        checkpoint = text[pos:]
        if not checkpoint:
            raise ProofError("tlog proof has an empty checkpoint")
        return cls(index=index, proof=tuple(hashes), checkpoint=checkpoint, extra=extra)
