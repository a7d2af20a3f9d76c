"""RFC 6962 / RFC 9162 Merkle tree: hashing, incremental append, proofs.

Pure functions and one small class; no I/O. Hashes are SHA-256 with the RFC 6962
domain separation: a leaf is ``SHA-256(0x00 || data)``, an interior node
``SHA-256(0x01 || left || right)`` and the empty tree ``SHA-256("")``.

Node coordinates
----------------
A *perfect, aligned* subtree is named ``(level, index)``: it covers the leaves
``[index * 2**level, (index + 1) * 2**level)``. Level 0 is a leaf hash. Any range
``[begin, end)`` splits into maximal perfect subtrees (``perfect_subtrees``); these
are the only hashes a store needs to keep (``CompactRange.append`` reports every
one it completes), and proofs are built from them with O(log n) reads.

Verification follows the semantics of the transparency-dev/merkle ``proof``
package (RFC 9162 §2.1.3.2 and §2.1.4.2), including its edge cases: a
consistency proof from the empty tree is refused, and equal sizes need an empty
proof and identical roots. Every failure raises ``ProofError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from signing.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Fetch",
    "Node",
    "consistency_proof",
    "consistency_proof_ranges",
    "hash_range",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "nodes_needed",
    "perfect_subtrees",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = tuple[int, int]
"""``(level, index)`` of a perfect aligned subtree."""

Fetch = Callable[[Collection[Node]], Mapping[Node, bytes]]
"""Answers a batch of node coordinates with their stored hashes."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (requires n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """Reference Merkle Tree Hash (RFC 9162 §2.1.1) of a list of leaf hashes.

    O(n) hashing, recursion depth O(log n). ``EMPTY_ROOT`` for no leaves.
    """

    def mth(begin: int, end: int) -> bytes:
        n = end - begin
        if n == 1:
            return leaf_hashes[begin]
        mid = begin + _split(n)
        return node_hash(mth(begin, mid), mth(mid, end))

    if not leaf_hashes:
        return EMPTY_ROOT
    return mth(0, len(leaf_hashes))


# --------------------------------------------------------------------------- ranges


def perfect_subtrees(begin: int, end: int) -> list[Node]:
    """Split ``[begin, end)`` into maximal aligned perfect subtrees, left to right.

    For ``begin == 0`` there is one subtree per set bit of ``end``, largest first.
    """
    if begin < 0 or end < begin:
        raise ValueError(f"invalid range [{begin}, {end})")
    out: list[Node] = []
    while begin < end:
        level = (end - begin).bit_length() - 1  # largest that fits
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)  # largest aligned
        out.append((level, begin >> level))
        begin += 1 << level
    return out


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form the RFC 9162 §2.1.3.1 inclusion proof.

    Ordered from the leaf's sibling up to the root's child.
    """
    if size < 0 or index < 0:
        raise ProofError(f"negative index or size: index={index}, size={size}")
    if index >= size:
        raise ProofError(f"index is beyond size: {index} >= {size}")
    out: list[tuple[int, int]] = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + _split(end - begin)
        if index < mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((begin, mid))
            begin = mid
    out.reverse()
    return out


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form the RFC 9162 §2.1.4.1 consistency proof.

    Same order as SUBPROOF lists them. Empty when ``size1 == size2``. A proof
    from the empty tree is refused (no verifier would accept it).
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"negative size: size1={size1}, size2={size2}")
    if size1 > size2:
        raise ProofError(f"size1 ({size1}) > size2 ({size2})")
    if size1 == 0:
        raise ProofError("consistency proof from the empty tree is meaningless")
    out: list[tuple[int, int]] = []
    begin, end = 0, size2
    complete = True  # the ``b`` flag of SUBPROOF
    while end != size1:
        mid = begin + _split(end - begin)
        if size1 <= mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((begin, mid))
            begin = mid
            complete = False
    if not complete:
        out.append((begin, end))
    out.reverse()
    return out


def nodes_needed(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    """Coordinates of every perfect subtree needed to hash the given ranges."""
    need: set[Node] = set()
    for begin, end in ranges:
        need.update(perfect_subtrees(begin, end))
    return need


def _stored(nodes: Mapping[Node, bytes], node: Node) -> bytes:
    try:
        h = nodes[node]
    except KeyError:
        raise ProofError(f"stored node (level={node[0]}, index={node[1]}) is missing") from None
    if len(h) != HASH_SIZE:
        raise ProofError(
            f"stored node (level={node[0]}, index={node[1]}) has {len(h)} bytes, want {HASH_SIZE}"
        )
    return h


def hash_range(begin: int, end: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH of the leaves ``[begin, end)`` from stored perfect-subtree hashes.

    Folds ``perfect_subtrees(begin, end)`` from the right. This equals the RFC
    MTH only for *subtree-shaped* ranges: ``begin`` a multiple of the smallest
    power of two >= ``end - begin``. Every range of an inclusion or consistency
    proof has that shape (it is perfect, or starts at a split point and ends at
    the tree size); other ranges raise ``ValueError`` rather than hash wrongly.
    """
    if begin < 0 or end < begin:
        raise ValueError(f"invalid range [{begin}, {end})")
    if begin == end:
        return EMPTY_ROOT
    width = 1 << (end - begin - 1).bit_length()
    if begin % width:
        raise ValueError(
            f"range [{begin}, {end}) is not subtree-shaped: its MTH is not a fold of "
            "stored perfect subtrees"
        )
    subtrees = perfect_subtrees(begin, end)
    h = _stored(nodes, subtrees[-1])
    for node in reversed(subtrees[:-1]):
        h = node_hash(_stored(nodes, node), h)
    return h


def _build(ranges: list[tuple[int, int]], fetch: Fetch) -> list[bytes]:
    if not ranges:
        return []
    nodes = fetch(frozenset(nodes_needed(ranges)))
    return [hash_range(begin, end, nodes) for begin, end in ranges]


def inclusion_proof(index: int, size: int, fetch: Fetch) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in the tree of ``size`` leaves.

    ``fetch`` is called once with every node coordinate needed (O(log n) of
    them), or not at all when the proof is empty (``size == 1``).
    """
    return _build(inclusion_proof_ranges(index, size), fetch)


def consistency_proof(size1: int, size2: int, fetch: Fetch) -> list[bytes]:
    """Consistency proof from the tree of ``size1`` leaves to that of ``size2``.

    ``fetch`` is called once with every node coordinate needed (O(log n) of
    them), or not at all when the proof is empty (``size1 == size2``).
    """
    return _build(consistency_proof_ranges(size1, size2), fetch)


# --------------------------------------------------------------------------- append


class CompactRange:
    """Right frontier of a tree of ``size`` leaves, for incremental append.

    ``hashes`` are the hashes of ``perfect_subtrees(0, size)``, largest first.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"negative size {size}")
        want = size.bit_count()
        if len(hashes) != want:
            raise ValueError(
                f"a tree of size {size} needs {want} frontier hashes, got {len(hashes)}"
            )
        for i, h in enumerate(hashes):
            if len(h) != HASH_SIZE:
                raise ValueError(f"frontier hash {i} has {len(h)} bytes, want {HASH_SIZE}")
        self._size = size
        self._hashes = [bytes(h) for h in hashes]

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash; return the new perfect nodes (level >= 1) it completes.

        Each is ``(level, index, hash)``, lowest level first. O(log n), no recursion.
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash has {len(leaf)} bytes, want {HASH_SIZE}")
        hashes = self._hashes
        index = self._size
        self._size = index + 1
        created: list[tuple[int, int, bytes]] = []
        h = leaf
        level = 0
        while index & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            index >>= 1
            created.append((level, index, h))
        hashes.append(h)
        return created

    def root(self) -> bytes:
        """Root hash of the tree: the frontier folded right to left."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> CompactRange:
        clone = CompactRange.__new__(CompactRange)
        clone._size = self._size
        clone._hashes = list(self._hashes)
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


# --------------------------------------------------------------------------- verify


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} has {len(h)} bytes, want {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h)


def _mismatch(what: str, calculated: bytes, expected: bytes) -> ProofError:
    return ProofError(
        f"{what} mismatch: calculated {calculated.hex()}, expected {expected.hex() or '<empty>'}"
    )


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Root implied by an inclusion proof for ``leaf_hash`` at ``index`` (RFC 9162 §2.1.3.2)."""
    if index < 0 or size < 0:
        raise ProofError(f"negative index or size: index={index}, size={size}")
    if index >= size:
        raise ProofError(f"index is beyond size: {index} >= {size}")
    _check_hash("leaf hash", leaf_hash)
    # The paths to ``index`` and to ``size - 1`` share their top ``border`` levels,
    # where the proof holds only left siblings; below that (``inner``) both occur.
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        raise ProofError(f"wrong proof length {len(proof)}, want {inner + border}")
    _check_proof(proof)
    h = leaf_hash
    for i in range(inner):
        # Bit i of the index says whether the level-i sibling is on the left.
        h = node_hash(proof[i], h) if (index >> i) & 1 else node_hash(h, proof[i])
    for sibling in proof[inner:]:
        h = node_hash(sibling, h)
    return h


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ``ProofError`` unless ``proof`` shows ``leaf_hash`` at ``index`` under ``root``."""
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    _check_hash("root", root)
    if calculated != root:
        raise _mismatch("root", calculated, root)


def root_from_consistency_proof(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """Check ``proof`` against ``root1`` and return the root it implies for ``size2``.

    RFC 9162 §2.1.4.2. Raises ``ProofError`` if the proof is malformed or does not
    reproduce ``root1``.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"negative size: size1={size1}, size2={size2}")
    if size2 < size1:
        raise ProofError(f"size1 ({size1}) > size2 ({size2})")
    if size1 == 0:
        raise ProofError("consistency proof from the empty tree is meaningless")
    if size1 == size2:
        if proof:
            raise ProofError(f"size1 == size2 ({size1}) but the proof is not empty")
        return root1
    if not proof:
        raise ProofError(f"empty proof for size1={size1} < size2={size2}")

    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    inner -= shift  # shift < inner because size1 < size2
    # The proof starts with the hash of the 2**shift subtree holding leaf size1-1,
    # unless that subtree is the whole old tree (size1 is a power of two).
    if size1 == 1 << shift:
        seed, start = root1, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise ProofError(f"wrong proof length {len(proof)}, want {start + inner + border}")
    _check_proof(proof)
    _check_hash("root1", root1)
    path = proof[start:]
    mask = (size1 - 1) >> shift

    hash1 = seed
    hash2 = seed
    for i in range(inner):
        sibling = path[i]
        if (mask >> i) & 1:
            hash1 = node_hash(sibling, hash1)
            hash2 = node_hash(sibling, hash2)
        else:
            hash2 = node_hash(hash2, sibling)
    for sibling in path[inner:]:
        hash1 = node_hash(sibling, hash1)
        hash2 = node_hash(sibling, hash2)
    if hash1 != root1:
        raise _mismatch("root1", hash1, root1)
    return hash2


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise ``ProofError`` unless ``proof`` shows the ``size1`` tree is a prefix of ``size2``'s.

    As in transparency-dev/merkle, equal sizes need an empty proof and
    byte-identical roots (their length is not checked: there is nothing to hash),
    and ``size1 == 0`` is always refused, even with ``size2 == 0``.
    """
    calculated = root_from_consistency_proof(size1, size2, proof, root1)
    if calculated != root2:
        raise _mismatch("root2", calculated, root2)
