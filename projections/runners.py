"""Keeping the read models current: one writer per projection, exactly once, resumable.

* ``open_view(database)`` builds the view (a tracking recorder) for the ledger's database
  with the ``eventsourcing`` infrastructure factory, as ``ProjectionRunner`` does.
* ``CatchUpRunner`` (both backends; the only runner on SQLite, which has no subscriptions)
  polls the log: every ``interval`` seconds it processes what was appended after its
  tracking position, in batches, each batch committed with its position.
* ``SubscriptionRunner`` (PostgreSQL) is the library's ``ProjectionRunner``: it subscribes
  to the application's notifications (LISTEN/NOTIFY) and hands each event to
  ``EvaluationProjection.process_event``, which buffers events and commits them in batches;
  a periodic catch-up tick flushes the buffer and reads anything a lost NOTIFY left behind.
* **One writer per projection.** A runner leads only while it holds the projection's lock
  (``ledger.jobs.LeaderLock``): on PostgreSQL a session advisory lock held by a dedicated
  connection, on SQLite an exclusive ``flock`` on ``<database>.projections.lock``. The
  service's runner (``start_runner(..., standby=True)``) waits in standby while another
  process leads, and takes over within a second or so when that process dies (its lock dies
  with its connection or process); it resumes from the tracking position (rows and position
  are committed together, so nothing is lost or repeated). A runner built without
  ``standby`` (tests, the command line's ``rebuild``) is refused with ``RunnerBusy`` instead.
* **Through faults.** Each runner is a ``ledger.jobs.Job``: a failed step (a lost
  connection, the library's subscription thread ending) closes the runner's views and
  subscription, and after a back-off opens them again from the committed position; its
  health (``ok``, ``retrying since T (error)``, ``standby``, ``failed``) is what
  ``/v1/status`` reports. A runner that cannot recover calls ``on_fatal`` (the service exits).
* ``rebuild(database)`` empties the views and processes the whole log again from zero.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import Environment

from ledger.config import Database
from ledger.jobs import FAILED, Job, JobHealth, JobTable, LeaderLock
from projections.engine import Evaluations
from projections.store import (
    APP_NAME,
    LogRow,
    PostgresEvaluationView,
    SQLiteEvaluationView,
    _ViewSQL,
)

PROJECTIONS = ("evaluations",)
JOB = "projections"  # the runner's name as a job (its lock, its row in kpi_jobs)


class RunnerBusy(RuntimeError):
    """Another runner already writes this projection."""


def open_view(database: Database) -> _ViewSQL:
    """The evaluation views of ``database`` (tables created if missing)."""
    env = dict(database.env)
    if database.backend == "sqlite":
        env["TRACKING_RECORDER_TOPIC"] = "projections.store:SQLiteEvaluationView"
    else:
        env["TRACKING_RECORDER_TOPIC"] = "projections.store:PostgresEvaluationView"
    factory = InfrastructureFactory.construct(Environment(Evaluations.name, env))
    view = factory.tracking_recorder()
    assert isinstance(view, SQLiteEvaluationView | PostgresEvaluationView)
    view._kpi_factory = factory  # type: ignore[union-attr]  # keeps the datastore open
    return view


def close_view(view: _ViewSQL) -> None:
    factory = getattr(view, "_kpi_factory", None)
    if factory is not None:
        factory.close()


class WriterLock:
    """The projection's single-writer lock, taken now or refused (``RunnerBusy``)."""

    def __init__(self, database: Database) -> None:
        self.lead = LeaderLock(database, JOB)

    def acquire(self) -> None:
        if not self.lead.try_acquire():
            raise RunnerBusy("another runner writes the evaluations projection (it holds its lock)")

    def release(self) -> None:
        self.lead.release()


@contextmanager
def writing(database: Database) -> Iterator[_ViewSQL]:
    """The views, opened under the projection's writer lock (``RunnerBusy`` if held)."""
    lock = WriterLock(database)
    lock.acquire()
    try:
        view = open_view(database)
        try:
            yield view
        finally:
            close_view(view)
    finally:
        lock.release()


def rebuild(database: Database, progress: Callable[[int], object] | None = None) -> int:
    """Empty the evaluation views and fold the whole log again; returns entries processed."""
    with writing(database) as view:
        view.clear()
        return Evaluations(view).catch_up(progress=progress)


def catch_up(database: Database) -> int:
    """Bring the views up to the head of the log (takes the writer lock while it works)."""
    with writing(database) as view:
        return Evaluations(view).catch_up()


class _Runner:
    """What both runners share: a ``Job`` that leads (the projection's lock), opens the
    runner's views, calls ``_tick`` every ``interval`` seconds, and reopens after a failure;
    ``wait_for`` (read-your-writes) and ``stop``.

    ``standby=False`` (the default): the lock is taken now or ``RunnerBusy`` is raised, and
    the views are opened before the constructor returns. ``standby=True``: the job waits for
    the lock in the background (the service: another process may lead)."""

    engine: Evaluations

    def __init__(
        self,
        database: Database,
        interval: float,
        *,
        standby: bool = False,
        on_fatal: Callable[[Job], object] | None = None,
    ) -> None:
        self.database = database
        self.interval = interval
        self.lock = LeaderLock(database, JOB)
        self._advanced = threading.Condition()
        self.job = Job(
            JOB,
            self._step,
            interval=interval,
            lock=self.lock,
            table=JobTable(database),
            open=self._open,
            close=self._close,
            on_fatal=on_fatal,
        )
        if not standby:
            if not self.lock.try_acquire():
                raise RunnerBusy("another runner writes the evaluations projection")
            try:
                self._open()
            except BaseException:
                self.lock.release()
                raise
            self.job.opened()
        self.job.start()

    @property
    def error(self) -> BaseException | None:
        """The last failure of a step (retried unless the job failed)."""
        return self.job.error

    def health(self) -> JobHealth:
        return self.job.health()

    def _step(self) -> None:
        self._tick()
        with self._advanced:
            self._advanced.notify_all()

    def _open(self) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def wait_for(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until the views reflect log position ``seq`` (or ``timeout``); raises the
        last error if the runner has given up."""

        def reached() -> bool:
            if self.job.health().state == FAILED:
                return True
            engine = getattr(self, "engine", None)
            return engine is not None and engine.seq >= seq and engine.current

        with self._advanced:
            ok = self._advanced.wait_for(reached, timeout)
        if self.job.health().state == FAILED and self.job.error is not None:
            raise self.job.error
        return ok

    def stop(self) -> None:
        self.job.stop()


class CatchUpRunner(_Runner):
    """Polls the log every ``interval`` seconds (SQLite, which has no subscriptions; on
    PostgreSQL with ``KPI_LEDGER_POLL_ONLY=1``)."""

    def __init__(
        self,
        database: Database,
        *,
        interval: float = 0.5,
        standby: bool = False,
        on_fatal: Callable[[Job], object] | None = None,
    ) -> None:
        self.view: _ViewSQL | None = None
        super().__init__(database, interval, standby=standby, on_fatal=on_fatal)

    def _open(self) -> None:
        self.view = open_view(self.database)
        self.engine = Evaluations(self.view)

    def _tick(self) -> None:
        self.engine.catch_up()

    def _close(self) -> None:
        if self.view is not None:
            close_view(self.view)
            self.view = None


class LogReader(Application[Any]):
    """The ledger's application as a projection runner subscribes to it: same name, same
    mapper, nothing written."""

    name = APP_NAME
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": "ledger.mapper:EnvelopeMapper",
        "IS_SNAPSHOTTING_ENABLED": "no",
    }


class EvaluationProjection(Projection[PostgresEvaluationView]):
    """``eventsourcing`` projection: events arrive one by one from the subscription; they are
    buffered and committed in batches (at ``BATCH`` events, or by the runner's tick)."""

    name = Evaluations.name
    BATCH = 500

    def __init__(self, view: PostgresEvaluationView) -> None:
        super().__init__(view)
        self.engine = Evaluations(view)
        self.lock = threading.RLock()
        self._pending: list[tuple[Any, Tracking]] = []

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        with self.lock:
            if tracking.notification_id <= self.engine.position:
                return  # already folded by a catch-up
            self._pending.append((domain_event, tracking))
            if len(self._pending) >= self.BATCH:
                self.flush()

    @property
    def pending(self) -> int:
        """Events received from the subscription and not yet committed."""
        with self.lock:
            return len(self._pending)

    def flush(self) -> None:
        with self.lock:
            if not self._pending:
                return
            ids = [t.notification_id for _, t in self._pending]
            seqs = self.view.seqs_for(ids)
            rows = [
                LogRow(seqs[t.notification_id], t.notification_id, str(e.originator_id), e.envelope)
                for e, t in self._pending
            ]
            self._pending.clear()
            self.engine.process(rows)

    def tick(self) -> None:
        """Flush the buffer, then read whatever a lost notification left behind."""
        with self.lock:
            self.flush()
            self.engine.catch_up()


class SubscriptionRunner(_Runner):
    """PostgreSQL: the library's ``ProjectionRunner``; the tick flushes its buffer and
    catches up after a lost NOTIFY, and notices when the library's subscription thread has
    ended (a lost connection): the step fails, and the job opens a new subscription."""

    def __init__(
        self,
        database: Database,
        *,
        interval: float = 0.5,
        standby: bool = False,
        on_fatal: Callable[[Job], object] | None = None,
    ) -> None:
        if database.backend != "postgres":
            raise ValueError("subscriptions need PostgreSQL; use CatchUpRunner on SQLite")
        self.runner: ProjectionRunner[Any, Any] | None = None
        super().__init__(database, interval, standby=standby, on_fatal=on_fatal)

    def _open(self) -> None:
        # catch up in batches first: the subscription then starts from the head
        view = open_view(self.database)
        try:
            Evaluations(view).catch_up()
        finally:
            close_view(view)
        env = {
            **self.database.env,
            "TRACKING_RECORDER_TOPIC": "projections.store:PostgresEvaluationView",
        }
        runner: ProjectionRunner[Any, Any] = ProjectionRunner(
            application_class=LogReader,
            projection_class=EvaluationProjection,
            view_class=PostgresEvaluationView,
            env=env,
        )
        runner.__enter__()  # starts the subscription
        self.runner = runner
        self.projection: EvaluationProjection = runner.projection  # type: ignore[assignment]
        self.engine = self.projection.engine

    def _tick(self) -> None:
        runner = self.runner
        assert runner is not None
        if runner.is_interrupted.is_set():
            error = runner._thread_error  # the library keeps it for its own re-raise
            raise RuntimeError(f"the subscription stopped: {error!r}") from error
        self.projection.tick()

    def _close(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            with contextlib.suppress(BaseException):
                runner.__exit__(None, None, None)  # stops it and joins its threads


def start_runner(
    database: Database,
    *,
    interval: float = 0.5,
    standby: bool = False,
    on_fatal: Callable[[Job], object] | None = None,
) -> CatchUpRunner | SubscriptionRunner:
    """The runner for the database's backend (``standby``: wait for the lead, see _Runner)."""
    if database.backend == "postgres" and os.environ.get("KPI_LEDGER_POLL_ONLY") != "1":
        return SubscriptionRunner(database, interval=interval, standby=standby, on_fatal=on_fatal)
    return CatchUpRunner(database, interval=interval, standby=standby, on_fatal=on_fatal)
