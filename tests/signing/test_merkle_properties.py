"""Property tests of signing.merkle against a naive Merkle Tree Hash written here.

The reference below follows RFC 9162 §2.1.1 literally (recursive, on slices) and
shares no code with the module under test.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Mapping
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.errors import ProofError
from signing.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    consistency_proof_ranges,
    hash_range,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    nodes_needed,
    perfect_subtrees,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)

MAX_N = 300
SETTINGS = settings(max_examples=150, deadline=None)

Node = tuple[int, int]


# --------------------------------------------------------------------------- naive reference


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(hashes: list[bytes]) -> bytes:
    n = len(hashes)
    if n == 0:
        return _h(b"")
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(hashes[:k]) + naive_mth(hashes[k:]))


LEAVES = [_h(b"\x00" + i.to_bytes(4, "big")) for i in range(MAX_N + 2)]


@cache
def naive_root(n: int) -> bytes:
    return naive_mth(LEAVES[:n])


@cache
def all_nodes() -> dict[Node, bytes]:
    """Every perfect aligned subtree of the MAX_N+2 leaves, by its naive MTH."""
    nodes: dict[Node, bytes] = {}
    level = 0
    while (1 << level) <= len(LEAVES):
        width = 1 << level
        for index in range(len(LEAVES) // width):
            nodes[(level, index)] = naive_mth(LEAVES[index * width : (index + 1) * width])
        level += 1
    return nodes


class RecordingFetch:
    """A ``fetch`` over a tree of ``size`` leaves that records and checks its calls."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[list[Node]] = []

    def __call__(self, coords: Collection[Node]) -> Mapping[Node, bytes]:
        coords = list(coords)
        self.calls.append(coords)
        nodes = all_nodes()
        for level, index in coords:
            assert level >= 0 and index >= 0
            assert (index + 1) << level <= self.size, (level, index, self.size)
        return {c: nodes[c] for c in coords}

    def check(self, proof: list[bytes]) -> None:
        if not proof:
            assert self.calls == []
            return
        assert len(self.calls) == 1
        (coords,) = self.calls
        assert len(coords) == len(set(coords))
        assert len(coords) <= 2 * math.ceil(math.log2(self.size)) + 2


def flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


sizes = st.integers(min_value=1, max_value=MAX_N)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return n, draw(st.integers(min_value=0, max_value=n - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n2 = draw(sizes)
    return draw(st.integers(min_value=1, max_value=n2)), n2


# --------------------------------------------------------------------------- basics


def test_hash_primitives() -> None:
    assert HASH_SIZE == 32
    assert _h(b"") == EMPTY_ROOT
    assert leaf_hash(b"abc") == _h(b"\x00abc")
    assert node_hash(b"L", b"R") == _h(b"\x01LR")
    assert root_of([]) == EMPTY_ROOT


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_N))
def test_root_of_matches_naive(n: int) -> None:
    assert root_of(LEAVES[:n]) == naive_root(n)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_perfect_subtrees_decomposition(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    subtrees = perfect_subtrees(begin, end)
    pos = begin
    for level, index in subtrees:
        assert level >= 0
        assert index << level == pos  # contiguous, aligned
        pos += 1 << level
    assert pos == end
    # Maximal: no two neighbours are the two halves of one aligned parent.
    for (l1, i1), (l2, i2) in itertools.pairwise(subtrees):
        assert not (l1 == l2 and i1 % 2 == 0 and i2 == i1 + 1)
    # Sizes strictly rise, then strictly fall (the peak level may occur twice).
    levels = [lvl for lvl, _ in subtrees]
    if levels:
        peak = levels.index(max(levels))
        rising, falling = levels[: peak + 1], levels[peak + 1 :]
        if falling and falling[0] == levels[peak]:
            falling = falling[1:]
        assert rising == sorted(set(rising))
        assert falling == sorted(set(falling), reverse=True)
        assert all(lvl < levels[peak] for lvl in falling)
    if begin == 0:
        assert levels == [b for b in range(end.bit_length() - 1, -1, -1) if end >> b & 1]


def test_perfect_subtrees_rejects_bad_range() -> None:
    with pytest.raises(ValueError):
        perfect_subtrees(5, 4)
    with pytest.raises(ValueError):
        perfect_subtrees(-1, 4)
    assert perfect_subtrees(7, 7) == []


# --------------------------------------------------------------------------- inclusion


@SETTINGS
@given(size_and_index())
def test_inclusion_proof_verifies(case: tuple[int, int]) -> None:
    n, i = case
    fetch = RecordingFetch(n)
    proof = inclusion_proof(i, n, fetch)
    fetch.check(proof)
    root = naive_root(n)
    verify_inclusion(LEAVES[i], i, n, proof, root)
    assert root_from_inclusion_proof(LEAVES[i], i, n, proof) == root
    ranges = inclusion_proof_ranges(i, n)
    assert len(ranges) == len(proof)
    for (begin, end), h in zip(ranges, proof, strict=True):
        assert 0 <= begin < end <= n
        assert not begin <= i < end  # siblings never contain the leaf
        assert hash_range(begin, end, all_nodes()) == naive_mth(LEAVES[begin:end]) == h
    assert nodes_needed(ranges) == set(fetch.calls[0] if fetch.calls else ())


@SETTINGS
@given(size_and_index(), st.data())
def test_inclusion_tampering_fails(case: tuple[int, int], data: st.DataObject) -> None:
    n, i = case
    proof = inclusion_proof(i, n, RecordingFetch(n))
    root = naive_root(n)
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = flip(bad[j], bit)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[i], i, n, bad, root)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[i], i, n, proof, flip(root, bit))
    with pytest.raises(ProofError):
        verify_inclusion(flip(LEAVES[i], bit), i, n, proof, root)
    for other in (i - 1, i + 1):
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[i], other, n, proof, root)
    # A different size has a different root: the proof must not verify against it.
    for other in (n - 1, n + 1):
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[i], i, other, proof, naive_root(other))
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[i], i, n, proof[:-1], root)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[i], i, n, [*proof, root], root)


def test_inclusion_size_label_is_not_bound_by_the_proof() -> None:
    """RFC 9162 verification depends on the size only through the proof's shape.

    For leaf 0, sizes 3 and 4 give proofs of the same shape, so a size-3 proof
    "verifies" for the claim (size 4, root of size 3). That claim is never
    signed by an honest log, so this is harmless, but it is why the tampering
    property above checks other sizes against *their own* roots.
    """
    proof = inclusion_proof(0, 3, RecordingFetch(3))
    verify_inclusion(LEAVES[0], 0, 4, proof, naive_root(3))
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], 0, 4, proof, naive_root(4))


def test_inclusion_errors() -> None:
    fetch = RecordingFetch(4)
    for index, size in [(4, 4), (0, 0), (-1, 4), (0, -1)]:
        with pytest.raises(ProofError):
            inclusion_proof(index, size, fetch)
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[0], index, size, [], EMPTY_ROOT)
    assert fetch.calls == []
    with pytest.raises(ProofError, match="bytes"):
        verify_inclusion(LEAVES[0][:31], 0, 1, [], LEAVES[0])
    with pytest.raises(ProofError, match="length"):
        verify_inclusion(LEAVES[0], 0, 2, [], naive_root(2))
    with pytest.raises(ProofError, match="bytes"):
        verify_inclusion(LEAVES[0], 0, 2, [b"\x00" * 31], naive_root(2))
    # Single leaf: empty proof, fetch never called, root is the leaf hash.
    assert inclusion_proof(0, 1, fetch) == []
    assert fetch.calls == []
    verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])


def test_missing_stored_node_is_a_proof_error() -> None:
    def fetch(coords: Collection[Node]) -> Mapping[Node, bytes]:
        return {}

    with pytest.raises(ProofError, match="missing"):
        inclusion_proof(3, 10, fetch)

    def short(coords: Collection[Node]) -> Mapping[Node, bytes]:
        return {c: b"x" for c in coords}

    with pytest.raises(ProofError, match="bytes"):
        consistency_proof(3, 10, short)


# --------------------------------------------------------------------------- consistency


@SETTINGS
@given(two_sizes())
def test_consistency_proof_verifies(case: tuple[int, int]) -> None:
    n1, n2 = case
    fetch = RecordingFetch(n2)
    proof = consistency_proof(n1, n2, fetch)
    fetch.check(proof)
    verify_consistency(n1, n2, proof, naive_root(n1), naive_root(n2))
    assert root_from_consistency_proof(n1, n2, proof, naive_root(n1)) == naive_root(n2)
    ranges = consistency_proof_ranges(n1, n2)
    assert len(ranges) == len(proof)
    for (begin, end), h in zip(ranges, proof, strict=True):
        assert 0 <= begin < end <= n2
        assert hash_range(begin, end, all_nodes()) == naive_mth(LEAVES[begin:end]) == h
    assert nodes_needed(ranges) == set(fetch.calls[0] if fetch.calls else ())


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_tampering_fails(case: tuple[int, int], data: st.DataObject) -> None:
    n1, n2 = case
    proof = consistency_proof(n1, n2, RecordingFetch(n2))
    r1, r2 = naive_root(n1), naive_root(n2)
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = flip(bad[j], bit)
        with pytest.raises(ProofError):
            verify_consistency(n1, n2, bad, r1, r2)
    with pytest.raises(ProofError):
        verify_consistency(n1, n2, proof, flip(r1, bit), r2)
    with pytest.raises(ProofError):
        verify_consistency(n1, n2, proof, r1, flip(r2, bit))
    for m1 in (n1 - 1, n1 + 1):
        with pytest.raises(ProofError):
            verify_consistency(m1, n2, proof, naive_root(max(m1, 0)), r2)
    for m2 in (n2 - 1, n2 + 1):
        with pytest.raises(ProofError):
            verify_consistency(n1, m2, proof, r1, naive_root(m2))
    if n1 != n2:
        with pytest.raises(ProofError):
            verify_consistency(n1, n2, proof, r2, r1)  # swapped roots
        with pytest.raises(ProofError):
            verify_consistency(n1, n2, proof[:-1], r1, r2)
        with pytest.raises(ProofError):
            verify_consistency(n1, n2, [*proof, r1], r1, r2)


def test_consistency_errors() -> None:
    fetch = RecordingFetch(8)
    for s1, s2 in [(5, 4), (0, 4), (0, 0), (-1, 3)]:
        with pytest.raises(ProofError):
            consistency_proof(s1, s2, fetch)
    assert fetch.calls == []
    assert consistency_proof(5, 5, fetch) == []
    assert fetch.calls == []
    verify_consistency(5, 5, [], naive_root(5), naive_root(5))
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 5, [], EMPTY_ROOT, naive_root(5))
    with pytest.raises(ProofError, match="not empty"):
        verify_consistency(5, 5, [naive_root(5)], naive_root(5), naive_root(5))
    with pytest.raises(ProofError, match="empty proof"):
        verify_consistency(4, 5, [], naive_root(4), naive_root(5))
    with pytest.raises(ProofError, match="size1"):
        verify_consistency(6, 5, [], naive_root(6), naive_root(5))


# --------------------------------------------------------------------------- hash_range


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_N), st.integers(min_value=0, max_value=MAX_N))
def test_hash_range_on_subtree_shaped_ranges(a: int, b: int) -> None:
    begin, end = min(a, b), max(a, b)
    width = 1 << max(end - begin - 1, 0).bit_length()
    if begin % width == 0:
        assert hash_range(begin, end, all_nodes()) == naive_mth(LEAVES[begin:end])
    else:
        with pytest.raises(ValueError, match="subtree-shaped"):
            hash_range(begin, end, all_nodes())


def test_hash_range_refuses_ranges_it_cannot_hash() -> None:
    # MTH(D[1:4]) = H(H(d1, d2), d3) is not a fold of the stored (0,1), (1,1).
    with pytest.raises(ValueError):
        hash_range(1, 4, all_nodes())
    with pytest.raises(ProofError, match="missing"):
        hash_range(0, 3, {})


# --------------------------------------------------------------------------- CompactRange


@settings(max_examples=40, deadline=None)
@given(sizes)
def test_compact_range_emits_every_internal_node_once(n: int) -> None:
    cr = CompactRange()
    emitted: dict[Node, bytes] = {}
    for i in range(n):
        for level, index, h in cr.append(LEAVES[i]):
            assert level >= 1
            assert (level, index) not in emitted
            width = 1 << level
            assert (index + 1) * width == i + 1  # completed by this very leaf
            assert h == naive_mth(LEAVES[index * width : (index + 1) * width])
            emitted[(level, index)] = h
        assert cr.size == i + 1
    want = {(lvl, idx) for lvl in range(1, n.bit_length()) for idx in range(n >> lvl)}
    assert set(emitted) == want
    assert cr.root() == naive_root(n)
    nodes = all_nodes()
    assert cr.hashes == tuple(nodes[c] for c in perfect_subtrees(0, n))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_N), st.integers(min_value=0, max_value=40))
def test_compact_range_resume_and_copy(n: int, more: int) -> None:
    more = min(more, MAX_N - n)
    nodes = all_nodes()
    resumed = CompactRange(n, [nodes[c] for c in perfect_subtrees(0, n)])
    assert resumed.root() == naive_root(n)
    snapshot = resumed.copy()
    for i in range(n, n + more):
        resumed.append(LEAVES[i])
        assert resumed.root() == naive_root(i + 1)
    assert snapshot.size == n and snapshot.root() == naive_root(n)
    if more:
        assert snapshot != resumed


def test_compact_range_validation() -> None:
    assert CompactRange().root() == EMPTY_ROOT
    assert CompactRange().size == 0 and CompactRange().hashes == ()
    with pytest.raises(ValueError, match="frontier"):
        CompactRange(3, [LEAVES[0]])  # size 3 needs 2 hashes
    with pytest.raises(ValueError, match="frontier"):
        CompactRange(0, [LEAVES[0]])
    with pytest.raises(ValueError):
        CompactRange(1, [b"short"])
    with pytest.raises(ValueError):
        CompactRange(-1)
    with pytest.raises(ValueError):
        CompactRange().append(b"short")
    cr = CompactRange()
    assert cr.append(LEAVES[0]) == []
    assert cr.append(LEAVES[1]) == [(1, 0, node_hash(LEAVES[0], LEAVES[1]))]
    assert cr.append(LEAVES[2]) == []
    created = cr.append(LEAVES[3])
    assert [(lvl, idx) for lvl, idx, _ in created] == [(1, 1), (2, 0)]
    assert created[-1][2] == naive_root(4)
