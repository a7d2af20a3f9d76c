"""The proof cache: the same proofs and roots as the log's own, from memory once read."""

from __future__ import annotations

import pytest
from conftest import Ledger

from ledger.proof_cache import NotCached, ProofCache
from signing.merkle import verify_consistency, verify_inclusion


def test_every_proof_and_root_equals_the_logs_own(ledger: Ledger) -> None:
    ledger.attest("lan", 19)
    log = ledger.service.sealed
    size = log.log_size()
    cache = ProofCache(log)
    for n in range(1, size + 1):
        root = log.root(n)
        for index in range(n):
            got_root, proof = cache.inclusion(index, n)
            assert (got_root, proof) == (root, log.inclusion_proof(index, n))
        for first in range(1, n + 1):
            one, two, proof = cache.consistency(first, n)
            assert (one, two) == (log.root(first), root)
            assert proof == log.consistency_proof(first, n)
            verify_consistency(first, n, proof, one, two)


def test_a_warm_cache_answers_without_the_database(ledger: Ledger) -> None:
    ledger.attest("lan", 9)
    log = ledger.service.sealed
    size = log.log_size()
    cache = ProofCache(log)
    with pytest.raises(NotCached):
        cache.inclusion(3, size, cached_only=True)
    with pytest.raises(NotCached):
        cache.has(size, cached_only=True)  # the size is not known yet either
    assert cache.has(size) is None and cache.has(size + 1) == size
    root, proof = cache.inclusion(3, size)
    reads = cache.reads
    assert cache.inclusion(3, size, cached_only=True) == (root, proof)
    assert cache.has(size, cached_only=True) is None
    assert cache.reads == reads
    with pytest.raises(NotCached):
        cache.has(size + 1, cached_only=True)  # beyond what was seen: ask the database


def test_following_the_sealer_keeps_what_this_process_writes(ledger: Ledger) -> None:
    log = ledger.service.sealed
    cache = ProofCache(log, follow=True)
    cache.root(log.log_size())  # what was there before: read once (the left of every proof)
    assert cache.reads == 1
    written = ledger.attest("lan", 12)
    size = log.log_size()
    assert cache.has(size, cached_only=True) is None
    for seq in written:
        root, proof = cache.inclusion(seq, size, cached_only=True)
        entry = log.read_rows(seq, seq + 1)
        verify_inclusion(next(entry).leaf_hash, seq, size, proof, root)
    assert cache.reads == 1
    assert cache.root(size, cached_only=True) == log.root(size)


def test_the_least_recently_used_nodes_go_first(ledger: Ledger) -> None:
    ledger.attest("lan", 100)
    log = ledger.service.sealed
    size = log.log_size()
    cache = ProofCache(log, limit=64)
    for index in range(size):
        cache.inclusion(index, size)
    assert len(cache._nodes) <= 64
    assert cache.inclusion(0, size) == (log.root(size), log.inclusion_proof(0, size))


def test_bad_arguments_are_refused(ledger: Ledger) -> None:
    cache = ProofCache(ledger.service.sealed)
    with pytest.raises(ValueError, match="not in a tree"):
        cache.inclusion(3, 3)
    with pytest.raises(ValueError, match="no consistency proof"):
        cache.consistency(4, 3)
    with pytest.raises(ValueError, match="at least 64"):
        ProofCache(ledger.service.sealed, limit=10)
