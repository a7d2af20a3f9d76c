"""Idempotency keys in the sealed log: one entry per (actor, idempotency key), ever.

The token (``idempotency_token``) goes to ``log_entries.idem`` in the transaction that seals the
entry; a UNIQUE constraint refuses a second one, from this process or another, and the whole
batch is rolled back. Tested at the recorder level (the service's answer to a duplicate is the
service's business), on both backends.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import Ledger
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain.attestations import Attestation
from domain.service import LedgerService
from ledger.config import parse_database
from ledger.online import DatabaseSource
from ledger.sealer import SealedStoredEvent
from ledger.store import (
    DuplicateIdempotencyKeyError,
    ReplayedEnvelopeError,
    SealedLog,
    idempotency_token,
)
from signing.entry import Entry
from signing.facts import read_fact, sign_fact
from signing.keys import SigningKey
from signing.verify import verify

TABLES = ("log_entries", "log_nodes", "log_checkpoints", "log_meta")
_counter = iter(range(10**9))


def _envelope(key: SigningKey, idempotency_key: str | None) -> bytes:
    n = next(_counter)
    return sign_fact(
        key,
        "document.attested",
        {"sha256": f"{n:064x}", "title": f"Hồ sơ {n}"},
        idempotency_key=idempotency_key,
    ).to_bytes()


def _stored(service: LedgerService, envelope: bytes) -> StoredEvent:
    """The stored event the service would save for ``envelope``, built by its own mapper."""
    fact = read_fact(envelope)
    event = Attestation.Attested.from_envelope(
        Attestation.id_for(fact), 1, fact.envelope_bytes, get_topic(Attestation.Attested)
    )
    return service.mapper.to_stored_event(event)


def _counts(ledger: Ledger) -> dict[str, int]:
    return {t: int(ledger.sql(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in (ledger.events, *TABLES)}


def _idem_at(ledger: Ledger, seq: int) -> str | None:
    rows = ledger.sql("SELECT idem FROM log_entries WHERE seq = %s", (seq,))
    return None if rows[0][0] is None else str(rows[0][0])


def test_the_token_is_sha256_of_actor_newline_key() -> None:
    token = idempotency_token("lan", "đơn-42")
    assert token == hashlib.sha256("lan\nđơn-42".encode()).hexdigest()
    assert idempotency_token("lan", "k") != idempotency_token("minh", "k")


def test_the_mapper_fills_idem_from_the_fact(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    keyed = _stored(ledger.service, _envelope(lan, "k-1"))
    assert isinstance(keyed, SealedStoredEvent)
    assert keyed.idem == idempotency_token("lan", "k-1")
    plain = _stored(ledger.service, _envelope(lan, None))
    assert isinstance(plain, SealedStoredEvent) and plain.idem is None


def test_the_token_is_stored_and_found(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    envelope = _envelope(lan, "submission-1")
    seq = ledger.service.submit(envelope).seq
    token = idempotency_token("lan", "submission-1")
    assert _idem_at(ledger, seq) == token
    sealed = ledger.service.sealed
    assert sealed.idempotency_seqs([token, "0" * 64]) == {token: seq}
    assert sealed.idempotency_seqs([]) == {}
    entry = sealed.read_entry(seq)
    assert isinstance(entry, Entry) and entry.seq == seq and entry.envelope == envelope
    assert read_fact(entry.envelope).idempotency_key == "submission-1"
    assert sealed.read_entry(sealed.log_size()) is None


def test_a_duplicate_key_is_refused_and_records_nothing(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    seq = ledger.service.submit(_envelope(lan, "k")).seq
    before, size = _counts(ledger), ledger.service.sealed.log_size()
    again = _stored(ledger.service, _envelope(lan, "k"))  # same actor + key, another nonce
    assert isinstance(again, SealedStoredEvent)
    with pytest.raises(DuplicateIdempotencyKeyError) as caught:
        ledger.service.recorder.insert_events([again])
    error = caught.value
    assert isinstance(error, ReplayedEnvelopeError)  # callers that catch replays catch this too
    assert error.token == idempotency_token("lan", "k") and error.nonce == again.nonce
    assert ledger.service.sealed.idempotency_seqs([error.token]) == {error.token: seq}
    assert ledger.service.sealed.log_size() == size
    assert _counts(ledger) == before
    # A fresh event in the same batch is rolled back with it.
    fresh = _stored(ledger.service, _envelope(lan, "fresh"))
    with pytest.raises(DuplicateIdempotencyKeyError) as caught:
        ledger.service.recorder.insert_events([fresh, again])
    assert caught.value.token == idempotency_token("lan", "k")
    assert _counts(ledger) == before
    # The log is as good as before, and still takes new facts.
    ledger.service.submit(_envelope(lan, "fresh"))
    assert verify(DatabaseSource(ledger.service.sealed), [], workers=1).problems == []


def test_a_duplicate_within_one_batch_is_refused(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    before = _counts(ledger)
    first, second = (_stored(ledger.service, _envelope(lan, "twice")) for _ in range(2))
    with pytest.raises(DuplicateIdempotencyKeyError) as caught:
        ledger.service.recorder.insert_events([first, second])
    assert caught.value.token == idempotency_token("lan", "twice")
    assert isinstance(second, SealedStoredEvent)
    assert caught.value.nonce == second.nonce
    assert _counts(ledger) == before


def test_a_replayed_nonce_is_still_a_replay(ledger: Ledger) -> None:
    """A batch with a new token but a used nonce: the nonce is named, not the token."""
    lan = ledger.users["lan"]
    envelope = _envelope(lan, None)
    ledger.service.submit(envelope)
    before = _counts(ledger)
    fresh = _stored(ledger.service, _envelope(lan, "new"))
    replay = replace(_stored(ledger.service, envelope), originator_id=uuid.uuid4())  # new stream
    with pytest.raises(ReplayedEnvelopeError) as caught:
        ledger.service.recorder.insert_events([fresh, replay])
    assert not isinstance(caught.value, DuplicateIdempotencyKeyError)
    assert caught.value.nonce == read_fact(envelope).nonce
    assert _counts(ledger) == before


def test_the_same_key_by_another_actor_is_fine(ledger: Ledger) -> None:
    a = ledger.service.submit(_envelope(ledger.users["lan"], "shared")).seq
    b = ledger.service.submit(_envelope(ledger.users["minh"], "shared")).seq
    tokens = [idempotency_token("lan", "shared"), idempotency_token("minh", "shared")]
    assert ledger.service.sealed.idempotency_seqs(tokens) == {tokens[0]: a, tokens[1]: b}
    assert [_idem_at(ledger, a), _idem_at(ledger, b)] == tokens


def test_facts_without_a_key_never_collide(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    outcomes = ledger.service.submit_many([_envelope(lan, None) for _ in range(5)])
    seqs = [o.seq for o in outcomes]  # type: ignore[union-attr]
    assert len(set(seqs)) == 5
    assert all(_idem_at(ledger, s) is None for s in seqs)
    more = _stored(ledger.service, _envelope(lan, None))
    assert ledger.service.recorder.insert_events([more])  # NULLs do not collide either
    assert ledger.sql("SELECT COUNT(*) FROM log_entries WHERE idem IS NOT NULL")[0][0] == 0


def test_racing_writers_record_a_key_once(ledger: Ledger) -> None:
    """Two recorders (separate connections, as two processes would have) insert the same token
    at once: one wins, the other is refused, and the log holds the token once."""
    other = LedgerService(ledger.database)
    try:
        lan = ledger.users["lan"]
        events = [_stored(ledger.service, _envelope(lan, "race")) for _ in range(2)]
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]

        def write(i: int, service: LedgerService) -> None:
            barrier.wait()
            try:
                results[i] = service.recorder.insert_events([events[i]])
            except Exception as exc:
                results[i] = exc

        threads = [
            threading.Thread(target=write, args=(i, s))
            for i, s in enumerate((ledger.service, other))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a writer is stuck"
        refused = [r for r in results if isinstance(r, Exception)]
        written = [r for r in results if r is not None and not isinstance(r, Exception)]
        assert len(refused) == 1 and len(written) == 1, results
        assert isinstance(refused[0], DuplicateIdempotencyKeyError)
        token = idempotency_token("lan", "race")
        assert ledger.sql("SELECT COUNT(*) FROM log_entries WHERE idem = %s", (token,))[0][0] == 1
        assert verify(DatabaseSource(ledger.service.sealed), [], workers=1).problems == []
    finally:
        other.close()


_OLD_LOG_ENTRIES = (
    "CREATE TABLE log_entries ("
    " seq INTEGER PRIMARY KEY,"
    " notification_id INTEGER NOT NULL UNIQUE,"
    " recorded_at TEXT NOT NULL,"
    " leaf_hash BLOB NOT NULL,"
    " nonce TEXT UNIQUE)"
)


def test_an_old_sqlite_file_is_migrated_on_open(tmp_path: Path) -> None:
    """A file whose log_entries was created without idem: opening it adds the column."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_LOG_ENTRIES)
    conn.close()
    service = LedgerService(parse_database(f"sqlite:///{path}"))
    try:
        admin = SigningKey.generate("admin")
        service.bootstrap(SigningKey.generate("kpi.test/old"), admin)
        seq = service.submit(_envelope(admin, "k")).seq
        token = idempotency_token("admin", "k")
        assert service.sealed.idempotency_seqs([token]) == {token: seq}
        with pytest.raises(DuplicateIdempotencyKeyError):
            service.recorder.insert_events([_stored(service, _envelope(admin, "k"))])
        assert service.sealed.log_size() == seq + 1
    finally:
        service.close()
    with sqlite3.connect(path) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(log_entries)")]
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(log_entries)") if r[2]]
    conn.close()
    assert columns[-1] == "idem" and "log_entries_idem_key" in indexes


def _drop_idem(ledger: Ledger) -> None:
    """Turn the ledger's log_entries back into the schema before idem, keeping its rows."""
    if ledger.database.backend == "sqlite":
        ledger.sql(_OLD_LOG_ENTRIES.replace("log_entries", "old_entries"))
        ledger.sql(
            "INSERT INTO old_entries SELECT seq, notification_id, recorded_at, leaf_hash, nonce"
            " FROM log_entries"
        )
        ledger.sql("DROP TABLE log_entries")
        ledger.sql("ALTER TABLE old_entries RENAME TO log_entries")
    else:
        ledger.sql("ALTER TABLE log_entries DROP COLUMN idem")


def test_an_old_log_with_entries_keeps_working(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    ledger.attest("lan", 3)
    size = ledger.service.sealed.log_size()
    ledger.service.close()
    _drop_idem(ledger)
    ledger.service = LedgerService(ledger.database)  # create_table adds idem and its index
    sealed: SealedLog = ledger.service.sealed
    assert sealed.log_size() == size
    assert verify(DatabaseSource(sealed), [], workers=1).problems == []
    seq = ledger.service.submit(_envelope(lan, "after-migration")).seq
    assert seq == size
    token = idempotency_token("lan", "after-migration")
    assert sealed.idempotency_seqs([token]) == {token: seq}
    with pytest.raises(DuplicateIdempotencyKeyError):
        ledger.service.recorder.insert_events(
            [_stored(ledger.service, _envelope(lan, "after-migration"))]
        )
    assert sealed.log_size() == size + 1
    ledger.reopen()  # opening a migrated log again changes nothing
    assert ledger.service.sealed.idempotency_seqs([token]) == {token: seq}
