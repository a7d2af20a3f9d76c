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
* **One writer per projection.** Each runner first takes a lock: on PostgreSQL a session
  advisory lock (``pg_try_advisory_lock``) held by a dedicated connection for as long as the
  runner lives, on SQLite an exclusive ``flock`` on ``<database>.evaluations.lock``. A
  second runner for the same projection is refused with ``RunnerBusy``; if the first dies,
  the lock is released with its connection or process, and the next runner resumes from the
  tracking position (rows and position are committed together, so nothing is lost or
  repeated).
* ``rebuild(database)`` empties the views and processes the whole log again from zero.
"""

from __future__ import annotations

import fcntl
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
from projections.engine import Evaluations
from projections.store import (
    APP_NAME,
    LogRow,
    PostgresEvaluationView,
    SQLiteEvaluationView,
    _ViewSQL,
)

PROJECTIONS = ("evaluations",)
LOCK_ID = 0x6B70_6976  # "kpiv": the evaluations projection's advisory lock


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
    """The projection's single-writer lock (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._file: Any = None
        self._conn: Any = None

    def acquire(self) -> None:
        if self.database.backend == "sqlite":
            path = self.database.env["SQLITE_DBNAME"] + ".evaluations.lock"
            handle = open(path, "a+")  # noqa: SIM115 - held for the runner's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise RunnerBusy(f"another runner holds {path}") from None
            self._file = handle
            return
        import psycopg

        e = self.database.env
        conn = psycopg.connect(
            host=e["POSTGRES_HOST"],
            port=e["POSTGRES_PORT"],
            dbname=e["POSTGRES_DBNAME"],
            user=e["POSTGRES_USER"],
            password=e.get("POSTGRES_PASSWORD") or None,
            autocommit=True,
        )
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_ID,)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise RunnerBusy("another runner holds the evaluations advisory lock")
        self._conn = conn

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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
    """What both runners share: the writer lock, a thread that calls ``tick`` every
    ``interval`` seconds, ``wait_for`` (read-your-writes) and ``stop``."""

    engine: Evaluations

    def __init__(self, database: Database, interval: float) -> None:
        self.lock = WriterLock(database)
        self.lock.acquire()
        self.interval = interval
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._advanced = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="evaluations-runner", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
                with self._advanced:
                    self._advanced.notify_all()
                self._stop.wait(self.interval)
        except BaseException as exc:  # surfaced by wait_for / stop
            self.error = exc
            with self._advanced:
                self._advanced.notify_all()

    def _step(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def wait_for(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until the views reflect log position ``seq`` (or ``timeout``)."""
        with self._advanced:
            ok = self._advanced.wait_for(
                lambda: (self.engine.seq >= seq and self.engine.current) or self.error is not None,
                timeout,
            )
        if self.error is not None:
            raise self.error
        return ok

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self._close()
        finally:
            self.lock.release()
        if self.error is not None:
            raise self.error


class CatchUpRunner(_Runner):
    """Polls the log every ``interval`` seconds (SQLite, which has no subscriptions; on
    PostgreSQL with ``KPI_LEDGER_POLL_ONLY=1``)."""

    def __init__(self, database: Database, *, interval: float = 0.5) -> None:
        super().__init__(database, interval)
        try:
            self.view = open_view(database)
            self.engine = Evaluations(self.view)
        except BaseException:
            self.lock.release()
            raise
        self._thread.start()

    def _step(self) -> None:
        self.engine.catch_up()

    def _close(self) -> None:
        close_view(self.view)


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
    catches up after a lost NOTIFY."""

    def __init__(self, database: Database, *, interval: float = 0.5) -> None:
        if database.backend != "postgres":
            raise ValueError("subscriptions need PostgreSQL; use CatchUpRunner on SQLite")
        super().__init__(database, interval)
        try:
            # catch up in batches first: the subscription then starts from the head
            view = open_view(database)
            try:
                Evaluations(view).catch_up()
            finally:
                close_view(view)
            env = {
                **database.env,
                "TRACKING_RECORDER_TOPIC": "projections.store:PostgresEvaluationView",
            }
            self.runner: ProjectionRunner[Any, Any] = ProjectionRunner(
                application_class=LogReader,
                projection_class=EvaluationProjection,
                view_class=PostgresEvaluationView,
                env=env,
            )
            self.runner.__enter__()  # starts the subscription
        except BaseException:
            self.lock.release()
            raise
        self.projection: EvaluationProjection = self.runner.projection  # type: ignore[assignment]
        self.engine = self.projection.engine
        self._thread.start()

    def _step(self) -> None:
        self.projection.tick()

    def _close(self) -> None:
        self.runner.__exit__(None, None, None)  # stops it and joins its threads


def start_runner(
    database: Database, *, interval: float = 0.5
) -> CatchUpRunner | SubscriptionRunner:
    """The runner for the database's backend."""
    if database.backend == "postgres" and os.environ.get("KPI_LEDGER_POLL_ONLY") != "1":
        return SubscriptionRunner(database, interval=interval)
    return CatchUpRunner(database, interval=interval)
