"""The checkpointer: on demand, every N entries, every T seconds; never inconsistent."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Ledger
from eventsourcing.persistence import OperationalError

from ledger.checkpoints import Checkpointer, InconsistentLogError, SealRefused
from signing.checkpoint import verify_checkpoint
from signing.errors import ProofError
from signing.merkle import verify_consistency
from tests.waiting import eventually


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
    job = cp.run_every(0.1)
    try:
        ledger.attest("lan", 2)
        assert _eventually(lambda: _latest_size(ledger) == 5)
        assert job.health().state == "ok" and job.health().last_ok is not None
    finally:
        cp.stop()
    assert not job.alive and job.health().state == "stopped"


def _latest_size(ledger: Ledger) -> int:
    latest = ledger.service.sealed.latest_checkpoint()
    return latest.size if latest is not None else -1


def _eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    return eventually(condition, seconds)


class _Flaky:
    """The sealed log, with its reads failing like a lost connection while ``down``."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.down = False
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._log, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failures += 1
                raise OperationalError("server closed the connection unexpectedly")
            return attr(*args, **kwargs)

        return call


def test_the_periodic_checkpointer_survives_database_errors(ledger: Ledger) -> None:
    flaky = _Flaky(ledger.service.sealed)
    cp = Checkpointer(flaky, ledger.home.ledger_key(), ledger.home.state_path)  # type: ignore[arg-type]
    job = cp.run_every(0.02)
    try:
        assert _eventually(lambda: _latest_size(ledger) == 3)
        flaky.down = True
        ledger.attest("lan", 2)
        assert _eventually(lambda: job.health().state == "retrying")
        health = job.health()
        assert "OperationalError" in (health.detail or "") and health.summary().startswith(
            "retrying since "
        )
        assert _eventually(lambda: flaky.failures >= 3)  # it keeps trying, backing off
        assert job.alive
        flaky.down = False
        assert _eventually(lambda: _latest_size(ledger) == 5)  # and resumes where it was
        assert _eventually(lambda: job.health().state == "ok")
    finally:
        cp.stop()


def test_a_job_that_cannot_recover_gives_up_and_says_so(ledger: Ledger) -> None:
    flaky = _Flaky(ledger.service.sealed)
    flaky.down = True
    cp = Checkpointer(flaky, ledger.home.ledger_key(), ledger.home.state_path)  # type: ignore[arg-type]
    fatal: list[Any] = []
    job = cp.run_every(0.01, on_fatal=fatal.append, give_up=0.2)
    assert _eventually(lambda: not job.alive)
    assert fatal == [job] and job.health().state == "failed"
    assert "gave up after" in (job.health().detail or "")


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


def test_periodic_signing_refuses_an_altered_log_and_keeps_saying_so(ledger: Ledger) -> None:
    cp = ledger.checkpointer()
    cp.checkpoint()
    ledger.attest("lan", 2)
    ledger.sql(
        "UPDATE log_entries SET recorded_at = %s WHERE seq = 4", ("2001-01-01T00:00:00.000000Z",)
    )
    job = cp.run_every(0.05)
    try:
        assert _eventually(lambda: job.health().state == "refusing")
        assert isinstance(cp.error, InconsistentLogError)
        assert "entry 4" in (job.health().detail or "")
        assert job.alive  # an alarm, looked at again: not a silent stop
        assert _latest_size(ledger) == 3  # nothing past the damage was sealed
    finally:
        cp.stop()


def test_a_same_size_rewrite_is_refused(ledger: Ledger) -> None:
    """Truncate 5 entries and append 5 others: the size is the one signed, the root is not."""
    ledger.attest("lan", 5)
    cp = ledger.checkpointer()
    signed = cp.checkpoint()
    assert signed.checkpoint.size == 8
    ledger.truncate(3)
    ledger.attest("lan", 5, start=100)
    assert ledger.service.sealed.log_size() == 8
    cp = ledger.checkpointer()
    assert cp.due()
    with pytest.raises(InconsistentLogError, match="root"):
        cp.checkpoint()
    # and no receipt is handed out that its holder's check would fail
    latest = ledger.service.sealed.latest_checkpoint()
    assert latest is not None and latest.size == 8
    # entry 5 was replaced; entry 2 is intact, but its proof climbs through the rewritten
    # subtree: neither reaches the signed root, and neither gets a receipt
    for seq in (5, 2):
        with pytest.raises(ProofError, match=f"entry {seq} as the log holds it now"):
            ledger.service.sealed.receipt_proof(seq, latest)


@dataclass(frozen=True)
class _Refused:
    seq: int
    rule: str
    detail: str


def test_an_entry_the_intake_would_refuse_is_not_sealed(ledger: Ledger) -> None:
    ledger.attest("lan", 5)  # entries 3..7
    asked: list[tuple[int, int]] = []

    def admit(start: int, stop: int) -> _Refused | None:
        asked.append((start, stop))
        return _Refused(5, "separation.self_approval", "lan cannot approve her own work")

    cp = Checkpointer(
        ledger.service.sealed, ledger.home.ledger_key(), ledger.home.state_path, admit=admit
    )
    with pytest.raises(SealRefused, match="entry 5 would be refused") as caught:
        cp.checkpoint()
    assert caught.value.seq == 5 and asked == [(0, 8)]
    assert _latest_size(ledger) == 5  # the entries before it are sealed, none from it on
    with pytest.raises(SealRefused):
        cp.checkpoint()
    assert asked[-1] == (5, 8) and _latest_size(ledger) == 5
    job = cp.run_every(0.05)
    try:
        assert _eventually(lambda: job.health().state == "refusing")
        assert "separation.self_approval" in (job.health().detail or "")
    finally:
        cp.stop()


def test_a_newer_checkpoint_of_the_same_key_is_the_floor(ledger: Ledger, tmp_path: Path) -> None:
    """Two hosts, each with a copy of the home: the second's state is older than the
    database's newest checkpoint, which it must then extend."""
    import shutil

    ledger.attest("lan", 1)
    ledger.checkpointer().checkpoint()  # size 4, in both homes
    other = tmp_path / "other-state.json"
    shutil.copy(ledger.home.state_path, other)
    ledger.attest("lan", 4)
    ledger.checkpointer().checkpoint()  # size 8, signed by the first host
    second = Checkpointer(ledger.service.sealed, ledger.home.ledger_key(), other)
    assert second.state().size == 8
    ledger.sql("UPDATE log_nodes SET hash = %s WHERE level = 3 AND idx = 0", (b"\1" * 32,))
    ledger.attest("lan", 1, start=50)
    with pytest.raises(InconsistentLogError, match="size 8"):
        second.checkpoint()


def test_a_lost_signer_state_falls_back_to_the_newest_checkpoint(ledger: Ledger) -> None:
    ledger.attest("lan", 5)  # size 8: the signed tree is the single node (3, 0)
    ledger.checkpointer().checkpoint()
    ledger.home.state_path.unlink()  # the signer's memory is lost...
    ledger.sql("UPDATE log_nodes SET hash = %s WHERE level = 3 AND idx = 0", (b"\1" * 32,))
    ledger.attest("lan", 1, start=50)  # ...and the signed prefix was rewritten
    with pytest.raises(InconsistentLogError, match="size 8"):
        ledger.checkpointer().checkpoint()


def test_the_leader_reports_while_a_long_step_runs(ledger: Ledger) -> None:
    """Another process reads the leader's row in kpi_jobs: its heartbeat stays fresh while the
    interval is longer than STALE and while a step runs long, and a leader that took over
    says so at once, before its (slow) open."""
    import threading

    from ledger.jobs import STALE, Job, JobTable, LeaderLock

    table = JobTable(ledger.database)
    release = threading.Event()
    opened = threading.Event()

    def slow_open() -> None:
        opened.set()
        release.wait(20)

    job = Job(
        "checkpointer",
        lambda: None,
        interval=60,
        lock=LeaderLock(ledger.database, "checkpointer"),
        table=table,
        open=slow_open,
    ).start()
    try:
        assert opened.wait(10)
        row = table.read()["checkpointer"]
        assert row.state == "starting" and row.detail == "took the lead"
        time.sleep(4.5)  # two heartbeats, while the open still runs
        row = table.read()["checkpointer"]
        assert row.heartbeat is not None and time.time() - row.heartbeat < STALE / 2
        release.set()
        assert _eventually(lambda: table.read()["checkpointer"].state == "ok")
        time.sleep(4.5)  # well inside the 60 s interval: the heartbeat goes on
        row = table.read()["checkpointer"]
        assert row.heartbeat is not None and time.time() - row.heartbeat < STALE / 2
    finally:
        release.set()
        job.stop()
