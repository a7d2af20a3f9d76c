"""Proofs for a busy reader: the log's Merkle nodes kept in memory once read.

A stored node is the hash of a *complete* subtree (level ``L``, index ``i`` covers the leaves
``[i·2^L, (i+1)·2^L)``): once committed it never changes, whatever the log later appends. The
same holds of the log's size as a lower bound: the log only grows. So a service answering
many proof requests can keep what it has read (as transparency logs serve immutable tiles
from caches) and go to the database only for nodes it has not seen, and for the log's size
only when asked about a tree larger than any it has seen.

``ProofCache(log)`` answers an inclusion or a consistency proof together with the roots it is
checked against from one read of the missing nodes (none once the cache is warm). It reads
only committed rows, through the log's own connections, so it caches nothing a rolled-back
batch wrote. It holds at most ``limit`` nodes (least recently used go first: about 150 bytes
each, 10 MB at the default).

Every method takes ``cached_only``: then, rather than read the database, it raises
``NotCached``, so that an asynchronous server can answer from memory on its event loop and
send only the misses to a thread.

``ProofCache(log, follow=True)`` also keeps what this process seals as it commits (the new
leaves and nodes, from the sealer's ``on_commit``): the proofs clients ask for most, those of
entries just written, need no read at all.

It is for serving, not for checking: ``kpi-ledger verify`` and the export read the database
every time, so that a damaged row is seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable

from ledger.sealer import SealedBatch
from ledger.store import SealedLog
from signing.merkle import (
    EMPTY_ROOT,
    Node,
    consistency_proof_ranges,
    hash_range,
    inclusion_proof_ranges,
    nodes_needed,
    perfect_subtrees,
)

DEFAULT_LIMIT = 65_536


class NotCached(LookupError):
    """The answer needs a database read (asked with ``cached_only``)."""


class ProofCache:
    def __init__(self, log: SealedLog, *, limit: int = DEFAULT_LIMIT, follow: bool = False) -> None:
        if limit < 64:
            raise ValueError("a proof cache needs room for at least 64 nodes")
        self.log = log
        self.limit = limit
        self._nodes: OrderedDict[Node, bytes] = OrderedDict()
        self._size = 0  # the largest log size seen: the log has at least this many entries
        self._lock = threading.Lock()
        self.reads = 0  # database reads of nodes (for tests and the bench)
        if follow:
            log.sealer.on_commit.append(self.committed)

    def committed(self, batch: SealedBatch) -> None:
        """Keep a committed batch's leaves and new nodes, and its size."""
        fresh = [((0, row[0]), row[3]) for row in batch.entry_rows]
        fresh += [((level, index), h) for level, index, h in batch.node_rows]
        with self._lock:
            self._size = max(self._size, batch.start + len(batch.entry_rows))
            self._keep(fresh)

    def _keep(self, fresh: Iterable[tuple[Node, bytes]]) -> None:
        nodes = self._nodes
        nodes.update(fresh)
        while len(nodes) > self.limit:
            nodes.popitem(last=False)

    def has(self, size: int, *, cached_only: bool = False) -> int | None:
        """None if the log has at least ``size`` entries, else its size (then read afresh)."""
        if size <= self._size:
            return None
        if cached_only:
            raise NotCached("the log's size")
        current = self.log.log_size()
        with self._lock:
            self._size = max(self._size, current)
        return None if size <= current else current

    def nodes(self, coords: Iterable[Node], *, cached_only: bool = False) -> dict[Node, bytes]:
        wanted = set(coords)
        found: dict[Node, bytes] = {}
        with self._lock:
            for c in wanted:
                h = self._nodes.get(c)
                if h is not None:
                    self._nodes.move_to_end(c)
                    found[c] = h
        missing = wanted - found.keys()
        if missing and cached_only:
            raise NotCached(f"{len(missing)} nodes")
        if missing:
            self.reads += 1
            fresh = self.log.read_nodes(missing)
            found.update(fresh)
            with self._lock:
                self._keep(fresh.items())
        return found

    def root(self, size: int, *, cached_only: bool = False) -> bytes:
        if size == 0:
            return EMPTY_ROOT
        return hash_range(0, size, self.nodes(perfect_subtrees(0, size), cached_only=cached_only))

    def inclusion(
        self, index: int, size: int, *, cached_only: bool = False
    ) -> tuple[bytes, list[bytes]]:
        """(root of the tree of ``size``, the RFC 9162 inclusion proof of leaf ``index``)."""
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not in a tree of {size}")
        ranges = inclusion_proof_ranges(index, size)
        nodes = self.nodes(_with_root(nodes_needed(ranges), size), cached_only=cached_only)
        return hash_range(0, size, nodes), [hash_range(b, e, nodes) for b, e in ranges]

    def consistency(
        self, first: int, second: int, *, cached_only: bool = False
    ) -> tuple[bytes, bytes, list[bytes]]:
        """(root of ``first``, root of ``second``, the consistency proof between them)."""
        if not 0 < first <= second:
            raise ValueError(f"no consistency proof from {first} to {second}")
        ranges = consistency_proof_ranges(first, second)
        coords = _with_root(_with_root(nodes_needed(ranges), first), second)
        nodes = self.nodes(coords, cached_only=cached_only)
        proof = [hash_range(b, e, nodes) for b, e in ranges]
        return hash_range(0, first, nodes), hash_range(0, second, nodes), proof


def _with_root(coords: Collection[Node], size: int) -> set[Node]:
    return set(coords) | set(perfect_subtrees(0, size))
