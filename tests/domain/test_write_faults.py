"""A write's answer is true whatever fails around its commit.

* the connection holding the writer's advisory lock is cut right after the batch committed
  on another connection: the batch is answered with its positions, and the next write works;
* the commit's reply is lost (the save raises after the batch was stored): the service looks
  its nonces up once no write is in flight and answers with the positions it finds;
* the save fails before anything was stored: ``WriteFailed(recorded=False)`` — after one
  automatic try more when the connection was lost — and nothing is in the log;
* the lookup fails too: ``WriteFailed(recorded=None)``, "outcome unknown", and a retry of the
  same envelopes is answered with their first positions.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from conftest import Ledger, make_ledger
from eventsourcing.persistence import OperationalError

from domain.errors import WriteFailed
from domain.service import WRITER_LOCK_ID, Appended
from signing.facts import sign_fact


def _envelopes(ledger: Ledger, n: int, start: int) -> list[bytes]:
    return [
        sign_fact(
            ledger.users["lan"],
            "document.attested",
            {"sha256": f"{start + i:064x}", "title": f"Hồ sơ {start + i}"},
        ).to_bytes()
        for i in range(n)
    ]


@contextmanager
def _save_failing(ledger: Ledger, *, after: bool, times: int = 1) -> Iterator[list[int]]:
    """The recorder's insert raises a lost-connection error ``times`` times: ``after`` the
    real insert committed (a lost COMMIT reply), or before it (nothing stored)."""
    recorder: Any = ledger.service.recorder
    real: Callable[..., Any] = recorder.insert_events
    calls: list[int] = []

    def insert_events(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > times:
            return real(*args, **kwargs)
        if after:
            real(*args, **kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    recorder.insert_events = insert_events
    try:
        yield calls
    finally:
        recorder.insert_events = real


def _seqs(outcomes: list[Any]) -> list[int]:
    assert all(isinstance(o, Appended) for o in outcomes), outcomes
    return [o.seq for o in outcomes]


def test_a_lost_commit_reply_is_answered_with_the_positions_stored(ledger: Ledger) -> None:
    size = ledger.service.sealed.log_size()
    envelopes = _envelopes(ledger, 3, 0)
    with _save_failing(ledger, after=True) as calls:
        outcomes = ledger.service.submit_many(envelopes)
    assert calls == [1]  # settled, not tried again
    assert _seqs(outcomes) == [size, size + 1, size + 2]
    assert ledger.service.sealed.log_size() == size + 3
    again = ledger.service.submit_many(envelopes)  # the same envelopes: their first answers
    assert _seqs(again) == _seqs(outcomes) and all(o.duplicate for o in again)  # type: ignore[union-attr]
    assert _seqs(ledger.service.submit_many(_envelopes(ledger, 1, 10))) == [size + 3]


def test_a_save_that_stored_nothing_is_tried_once_more(ledger: Ledger) -> None:
    size = ledger.service.sealed.log_size()
    with _save_failing(ledger, after=False) as calls:
        outcomes = ledger.service.submit_many(_envelopes(ledger, 2, 0))
    assert len(calls) == 2 and _seqs(outcomes) == [size, size + 1]


def test_nothing_recorded_is_said_only_when_known(ledger: Ledger) -> None:
    size = ledger.service.sealed.log_size()
    with _save_failing(ledger, after=False, times=2), pytest.raises(WriteFailed) as caught:
        ledger.service.submit_many(_envelopes(ledger, 2, 0))
    assert caught.value.recorded is False and "nothing was recorded" in caught.value.detail
    assert ledger.service.sealed.log_size() == size


def test_an_unknown_outcome_says_so_and_a_retry_finds_it(ledger: Ledger) -> None:
    size = ledger.service.sealed.log_size()
    envelopes = _envelopes(ledger, 2, 0)
    sealed: Any = ledger.service.sealed
    real_lookup = sealed.settled_nonce_seqs

    def lookup_fails(nonces: Any) -> Any:
        raise OperationalError("the database is gone")

    sealed.settled_nonce_seqs = lookup_fails
    try:
        with _save_failing(ledger, after=True), pytest.raises(WriteFailed) as caught:
            ledger.service.submit_many(envelopes)
    finally:
        sealed.settled_nonce_seqs = real_lookup
    assert caught.value.recorded is None and "outcome is unknown" in caught.value.detail
    again = ledger.service.submit_many(envelopes)  # what the client does: the same envelopes
    assert _seqs(again) == [size, size + 1] and all(o.duplicate for o in again)  # type: ignore[union-attr]


@pytest.mark.postgres
def test_the_writer_lock_connection_cut_after_the_commit(pg_url: str, tmp_path: Any) -> None:
    """The batch commits on one pooled connection; the advisory lock is held by another.
    Cutting the lock's connection between the commit and the unlock cannot make the answer
    a failure: the lock dies with its session, and the batch is answered with its positions."""
    ledger = make_ledger(pg_url, tmp_path / "home")
    try:
        size = ledger.service.sealed.log_size()

        def cut_the_lock(batch: object) -> None:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objid = %s AND granted",
                    (WRITER_LOCK_ID,),
                ).fetchall()
            assert rows == [(True,)]

        listeners = ledger.service.sealed.sealer.on_commit
        listeners.append(cut_the_lock)
        try:
            outcomes = ledger.service.submit_many(_envelopes(ledger, 2, 0))
        finally:
            listeners.remove(cut_the_lock)
        assert _seqs(outcomes) == [size, size + 1]
        # the lock was released with the session: the next write takes it at once
        assert _seqs(ledger.service.submit_many(_envelopes(ledger, 1, 5))) == [size + 2]
    finally:
        ledger.service.close()


def test_a_batch_is_never_sealed_at_positions_it_was_not_checked_for(ledger: Ledger) -> None:
    """Between the key checks and the commit another writer appends Lan's key revocation (a
    second service on the same database; on PostgreSQL after this writer's lock connection
    was cut, which is how the lock can be lost). Lan's facts were checked at positions before
    the revocation: sealed after it, they would be signed by a revoked key. The commit finds
    the head moved and stores nothing; checked again at their real positions, they are
    refused, and nothing of them is in the log."""
    from domain.service import LedgerService

    other = LedgerService(ledger.database)
    service = ledger.service
    real = service._examine_all
    interleaved: list[int] = []
    lan = ledger.users["lan"]
    revocation = sign_fact(ledger.admin, "key.revoked", {"keyid": lan.keyid, "reason": "lost"})

    def examine_then_someone_else_writes(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if interleaved:
            return
        if ledger.database.backend == "postgres":
            with psycopg.connect(ledger.database.url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND objid = %s AND granted",
                    (WRITER_LOCK_ID,),
                )
        else:  # SQLite: the writer's flock, lost as a lock is lost
            fcntl.flock(service._writer_file, fcntl.LOCK_UN)
        interleaved.extend(_seqs(other.submit_many([revocation.to_bytes()])))

    service._examine_all = examine_then_someone_else_writes  # type: ignore[method-assign]
    try:
        size = service.sealed.log_size()
        outcomes = service.submit_many(_envelopes(ledger, 2, 0))
    finally:
        service._examine_all = real  # type: ignore[method-assign]
        other.close()
    assert interleaved == [size]  # the revocation took the position first checked
    assert [getattr(o, "rule", None) for o in outcomes] == ["key.not_valid"] * 2, outcomes
    assert service.sealed.log_size() == size + 1
