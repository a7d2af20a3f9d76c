"""signing.merkle against the transparency-dev/merkle test vectors (Apache-2.0).

Every JSON file under tests/vectors/rfc6962/{inclusion,consistency} is one case:
verification must raise ProofError exactly when the vector says ``wantErr``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from signing.errors import ProofError
from signing.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc6962"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))
EXPECTED_PROOF_VECTORS = 196


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(VECTORS).as_posix() for p in paths]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _b64(value: str | None) -> bytes:
    # Go marshals nil []byte as null and empty []byte as "".
    return base64.b64decode(value, validate=True) if value else b""


def _proof(value: list[str] | None) -> list[bytes]:
    # Go marshals a nil [][]byte as null.
    return [_b64(h) for h in value or []]


@cache
def _known_answers() -> tuple[list[bytes], list[bytes]]:
    data = _load(VECTORS / "known-answers.json")
    leaves = [bytes.fromhex(h) for h in data["leaf_inputs_hex"]]
    roots = [bytes.fromhex(h) for h in data["root_hashes_hex_by_tree_size"]]
    return leaves, roots


def _known_tree_fetch() -> Any:
    """A ``fetch`` over every perfect subtree of the known-answer tree (8 leaves)."""
    leaves, _ = _known_answers()
    level = [leaf_hash(d) for d in leaves]
    nodes: dict[tuple[int, int], bytes] = {(0, i): h for i, h in enumerate(level)}
    lvl = 0
    while len(level) > 1:
        level = [node_hash(level[2 * i], level[2 * i + 1]) for i in range(len(level) // 2)]
        lvl += 1
        nodes.update(((lvl, i), h) for i, h in enumerate(level))

    def fetch(coords: Collection[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        return {c: nodes[c] for c in coords}

    return fetch


def test_vector_count() -> None:
    """All folders (numbered, additional/, single-entry/) are present."""
    assert len(INCLUSION) + len(CONSISTENCY) == EXPECTED_PROOF_VECTORS
    folders = {p.parent.relative_to(VECTORS).as_posix() for p in INCLUSION + CONSISTENCY}
    assert "inclusion/single-entry" in folders
    assert "consistency/additional" in folders
    assert any(f.startswith("inclusion/additional/") for f in folders)


@pytest.mark.parametrize("path", INCLUSION, ids=_ids(INCLUSION))
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v["proof"]))
    root = _b64(v["root"])
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, root)
    else:
        verify_inclusion(*args, root)
        assert root_from_inclusion_proof(*args) == root


@pytest.mark.parametrize("path", CONSISTENCY, ids=_ids(CONSISTENCY))
def test_consistency_vector(path: Path) -> None:
    v = _load(path)
    args = (v["size1"], v["size2"], _proof(v["proof"]), _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


HAPPY_INCLUSION = [p for p in INCLUSION if p.name == "happy-path.json"]
HAPPY_CONSISTENCY = [p for p in CONSISTENCY if p.name == "happy-path.json"]


@pytest.mark.parametrize("path", HAPPY_INCLUSION, ids=_ids(HAPPY_INCLUSION))
def test_built_inclusion_proof_equals_vector(path: Path) -> None:
    """Our builder emits the very proofs of the vectors (same hashes, same order)."""
    v = _load(path)
    _, roots = _known_answers()
    assert _b64(v["root"]) == roots[v["treeSize"]]
    assert inclusion_proof(v["leafIdx"], v["treeSize"], _known_tree_fetch()) == _proof(v["proof"])


@pytest.mark.parametrize("path", HAPPY_CONSISTENCY, ids=_ids(HAPPY_CONSISTENCY))
def test_built_consistency_proof_equals_vector(path: Path) -> None:
    v = _load(path)
    _, roots = _known_answers()
    assert _b64(v["root1"]) == roots[v["size1"]]
    assert _b64(v["root2"]) == roots[v["size2"]]
    built = consistency_proof(v["size1"], v["size2"], _known_tree_fetch())
    assert built == _proof(v["proof"])


def test_known_answer_roots() -> None:
    leaves, roots = _known_answers()
    assert len(roots) == len(leaves) + 1
    assert roots[0] == EMPTY_ROOT
    hashes = [leaf_hash(d) for d in leaves]
    for n, want in enumerate(roots):
        assert root_of(hashes[:n]) == want, n


def test_known_answer_roots_by_compact_range() -> None:
    leaves, roots = _known_answers()
    cr = CompactRange()
    assert cr.root() == roots[0]
    for n, data in enumerate(leaves, start=1):
        cr.append(leaf_hash(data))
        assert cr.size == n
        assert cr.root() == roots[n], n
        # The frontier alone is enough to resume.
        resumed = CompactRange(n, cr.hashes)
        assert resumed.root() == roots[n]
        assert len(cr.hashes) == len(perfect_subtrees(0, n))
