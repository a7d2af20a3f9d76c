"""The checkpointer: on demand, every N entries, every T seconds; never inconsistent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Ledger

from ledger.checkpoints import Checkpointer, InconsistentLogError
from signing.checkpoint import verify_checkpoint
from signing.merkle import verify_consistency


def test_checkpoints_are_consistent_with_each_other(ledger: Ledger) -> None:
    cp = ledger.checkpointer()
    first = cp.checkpoint()
    ledger.attest("lan", 5)
    second = cp.checkpoint()
    assert (first.checkpoint.size, second.checkpoint.size) == (3, 8)
    one = verify_checkpoint(first.note, ledger.log_keys).checkpoint
    two = verify_checkpoint(second.note, ledger.log_keys).checkpoint
    proof = ledger.service.sealed.consistency_proof(3, 8)
    verify_consistency(3, 8, proof, one.root, two.root)
    assert second.timestamp is not None and abs(second.timestamp - time.time()) < 5
    assert cp.checkpoint().note == second.note  # nothing new: the same checkpoint


def test_every_n_entries(ledger: Ledger) -> None:
    cp = Checkpointer(
        ledger.service.sealed, ledger.home.ledger_key(), ledger.home.state_path, every_entries=4
    )
    ledger.service.after_append = cp.maybe_checkpoint
    for i in range(10):
        ledger.attest("lan", 1, start=i)
    assert [c.size for c in ledger.service.sealed.checkpoints()] == [4, 8, 12]


def test_every_t_seconds(ledger: Ledger) -> None:
    cp = ledger.checkpointer()
    thread = cp.run_every(0.1)
    try:
        ledger.attest("lan", 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            latest = ledger.service.sealed.latest_checkpoint()
            if latest is not None and latest.size == 5:
                break
            time.sleep(0.05)
        assert ledger.service.sealed.latest_checkpoint().size == 5  # type: ignore[union-attr]
    finally:
        cp.stop()
        thread.join(2)


def test_refuses_when_entries_were_removed(ledger: Ledger) -> None:
    ledger.attest("lan", 3)
    ledger.checkpointer().checkpoint()
    ledger.sql("DELETE FROM log_entries WHERE seq = 5")
    with pytest.raises(InconsistentLogError):
        ledger.checkpointer().checkpoint()


def test_refuses_when_an_entry_changed_after_signing(ledger: Ledger) -> None:
    ledger.attest("lan", 3)
    ledger.checkpointer().checkpoint()
    ledger.attest("lan", 2, start=10)
    ledger.sql(
        "UPDATE log_entries SET recorded_at = %s WHERE seq = 6", ("2001-01-01T00:00:00.000000Z",)
    )
    with pytest.raises(InconsistentLogError, match="entry 6"):
        ledger.checkpointer().checkpoint()


def test_refuses_when_the_signed_prefix_was_rewritten(ledger: Ledger) -> None:
    ledger.attest("lan", 5)  # size 8: the signed tree is the single node (3, 0)
    ledger.checkpointer().checkpoint()
    ledger.attest("lan", 1, start=10)
    ledger.sql("UPDATE log_nodes SET hash = %s WHERE level = 3 AND idx = 0", (b"\0" * 32,))
    with pytest.raises(InconsistentLogError, match="no longer matches"):
        ledger.checkpointer().checkpoint()


def test_an_empty_log_is_not_sealed(db_url: str, tmp_path: Path) -> None:
    from domain.service import LedgerService
    from ledger.checkpoints import EmptyLogError
    from ledger.config import parse_database
    from ledger.home import LedgerHome

    home = LedgerHome(tmp_path / "h")
    key = home.create("kpi.test/empty")
    service = LedgerService(parse_database(db_url))
    try:
        with pytest.raises(EmptyLogError):
            Checkpointer(service.sealed, key, home.state_path).checkpoint()
    finally:
        service.close()


def test_a_size_zero_checkpoint_does_not_upset_the_verifier(ledger: Ledger) -> None:
    from ledger.online import DatabaseSource
    from ledger.store import StoredCheckpoint
    from signing.checkpoint import Checkpoint, sign_checkpoint
    from signing.merkle import EMPTY_ROOT
    from signing.verify import verify

    note = sign_checkpoint(
        Checkpoint("kpi.test/ledger", 0, EMPTY_ROOT), ledger.home.ledger_key(), int(time.time())
    )
    ledger.service.sealed.add_checkpoint(StoredCheckpoint(0, EMPTY_ROOT, note, "x"))
    ledger.checkpointer().checkpoint()
    report = verify(DatabaseSource(ledger.service.sealed), ledger.log_keys, workers=1)
    assert report.ok, report.problems
    assert [c.checkpoint.size for c in report.checkpoints] == [0, 3]


def test_periodic_signing_stops_and_reports_an_altered_log(ledger: Ledger) -> None:
    cp = ledger.checkpointer()
    cp.checkpoint()
    ledger.attest("lan", 2)
    ledger.sql(
        "UPDATE log_entries SET recorded_at = %s WHERE seq = 4", ("2001-01-01T00:00:00.000000Z",)
    )
    errors: list[Exception] = []
    thread = cp.run_every(0.05, on_error=errors.append)
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(cp.error, InconsistentLogError) and errors == [cp.error]


def test_a_lost_signer_state_falls_back_to_the_newest_checkpoint(ledger: Ledger) -> None:
    ledger.attest("lan", 5)  # size 8: the signed tree is the single node (3, 0)
    ledger.checkpointer().checkpoint()
    ledger.home.state_path.unlink()  # the signer's memory is lost...
    ledger.sql("UPDATE log_nodes SET hash = %s WHERE level = 3 AND idx = 0", (b"\1" * 32,))
    ledger.attest("lan", 1, start=50)  # ...and the signed prefix was rewritten
    with pytest.raises(InconsistentLogError, match="size 8"):
        ledger.checkpointer().checkpoint()
