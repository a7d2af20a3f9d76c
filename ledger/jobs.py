"""Background jobs that keep running through database faults, and say what they are doing.

The service runs two jobs beside its requests: the checkpointer (``ledger/checkpoints.py``)
and the projection runner (``projections/runners.py``). Each is a ``Job``: a thread that calls
the job's ``step`` every ``interval`` seconds, and

* **survives transient errors**: a step that raises is tried again with exponential back-off
  (``interval`` doubling up to ``MAX_BACKOFF``, 5 seconds); the first failure of a run of them is
  logged once with its cause, and so is the recovery;
* **tells the truth about itself**: ``health()`` is ``starting``, ``ok``, ``retrying`` (since
  when, and the error), ``refusing`` (the job's own verdict that it must not go on — the
  checkpointer finding the log altered — an alarm, looked at again every ``interval``),
  ``standby`` (another process leads), ``failed`` (given up: the service stops) or ``stopped``;
* **gives up loudly**: a step failing for longer than ``give_up`` seconds (database errors) or
  ``BUG_ATTEMPTS`` times in a row (anything else: a bug does not heal by waiting) makes the job
  ``failed`` and calls ``on_fatal``: the service exits non-zero rather than run on without it;
* **runs once across processes and hosts** (leader election): with a ``LeaderLock``, the job
  works only while it holds the lock — a PostgreSQL session advisory lock on a connection of
  its own, or an ``flock`` beside a SQLite file — and waits in ``standby`` otherwise, trying
  again every second; when the holder dies its lock dies with its session or its process, and
  a standby takes over within ``STANDBY_POLL`` seconds. While it leads, each loop turn proves
  the lock's connection alive (a heartbeat); a lost connection is a lost lead: the job closes
  what it opened and goes back to standby.

The leader also writes its state to the table ``kpi_jobs`` (one row per job: holder, state,
since, detail, heartbeat), so that every process on the database — the workers of
``serve --workers N``, a second host — reports the same jobs (``api/routes/health.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ledger.config import Database
from ledger.locks import JOB_LOCK_IDS, SCHEMA_LOCK_ID

logger = logging.getLogger("kpi_ledger.jobs")

MAX_BACKOFF = 5.0  # seconds between attempts, at most (a database back up is noticed soon)
GIVE_UP = 600.0  # seconds of failing database steps before a job gives up
BUG_ATTEMPTS = 5  # failing steps in a row, for errors that are not the database's
STANDBY_POLL = 1.0  # seconds between a standby's attempts to take the lead
HEARTBEAT = 2.0  # seconds between the leader's writes of its row in kpi_jobs
STALE = 10.0  # a row whose heartbeat is older than this has no live leader
BUSY = 15.0  # a step running longer than this is shown as such

STARTING, OK, RETRYING, REFUSING, STANDBY, FAILED, STOPPED = (
    "starting",
    "ok",
    "retrying",
    "refusing",
    "standby",
    "failed",
    "stopped",
)

# The server probes an idle session's client this often and gives up after this many misses,
# so a lock held by a host that vanished (no FIN, no RST) is released in about 25 s, not the
# operating system's default two hours.
KEEPALIVE_SETTINGS = (
    "tcp_keepalives_idle = 10",
    "tcp_keepalives_interval = 5",
    "tcp_keepalives_count = 3",
)

LOCK_IDS = JOB_LOCK_IDS  # advisory lock keys of the jobs that run once per database


class Refusing(Exception):
    """Raised by a step that must not go on until an operator acts (an integrity alarm)."""


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobHealth:
    """What a job is doing, as ``/v1/status`` shows it."""

    job: str
    state: str
    since: float
    detail: str | None = None
    holder: str | None = None
    heartbeat: float | None = None
    last_ok: float | None = None
    here: bool = True  # reported by this process (else read from kpi_jobs)
    busy_since: float | None = None  # a step has been running since then (past BUSY seconds)

    def summary(self) -> str:
        """``ok``, ``retrying since T (error)``, ``refusing since T (why)``, ..."""
        if self.state in (OK, STOPPED, "off"):
            return self.state
        if self.state == "unknown":
            return f"unknown ({self.detail})" if self.detail else "unknown"
        if self.busy_since is not None and self.state == OK:
            return f"ok, busy since {iso(self.busy_since)} (a step still running)"
        text = f"{self.state} since {iso(self.since)}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": iso(self.since),
            "detail": self.detail,
            "holder": self.holder,
            "heartbeat": iso(self.heartbeat),
            "last_success": iso(self.last_ok),
            "busy_since": iso(self.busy_since),
            "summary": self.summary(),
        }


def heal_pool(datastore: Any) -> None:
    """Drop a datastore's broken idle pooled connections (a database restart, or
    ``pg_terminate_backend``, ends them all at once, and each would otherwise fail one use
    before the pool notices). Nothing to do for SQLite."""
    pool = getattr(datastore, "pool", None)
    check = getattr(pool, "check", None)
    if check is not None:
        try:
            check()
        except Exception as exc:
            logger.warning("checking the connection pool failed: %s", exc)


def is_lock_timeout(exc: BaseException) -> bool:
    """A statement that waited too long for a lock (another writer holds it), not a fault of
    the connection: trying again at once would only wait as long again."""
    import psycopg

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def is_database_error(exc: BaseException) -> bool:
    """An error of the database or of the way to it (worth waiting for), not a bug."""
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError

    kinds = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, (*kinds, sqlite3.OperationalError, ConnectionError, TimeoutError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


# ---------------------------------------------------------------------------------------
# Leader election
# ---------------------------------------------------------------------------------------


class LeaderLock:
    """Who runs a job on a database: a PostgreSQL session advisory lock held by a dedicated
    connection, or an exclusive ``flock`` on ``<database file>.<job>.lock`` for SQLite. The
    holder also keeps the job's row of ``kpi_jobs`` (``publish``)."""

    def __init__(self, database: Database, job: str) -> None:
        self.database = database
        self.job = job
        self.lock_id = LOCK_IDS[job]
        self._file: Any = None
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._file is not None or self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False if another process holds it."""
        if self.held:
            return True
        if self.database.backend == "sqlite":
            path = self.database.env["SQLITE_DBNAME"] + f".{self.job}.lock"
            handle = open(path, "a+")  # noqa: SIM115 - held for the lead's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._file = handle
            return True
        conn = connect(self.database)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if not row or not row[0]:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> None:
        """Raise if the lock may have been lost (its connection does not answer)."""
        if self._conn is not None:
            self._conn.execute("SELECT 1")

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # the session ends: the server releases the lock
            self._conn = None


def connect(database: Database) -> Any:
    """An autocommit psycopg connection to the database (short timeouts: a job retries)."""
    import psycopg

    e = database.env
    return psycopg.connect(
        host=e["POSTGRES_HOST"],
        port=e["POSTGRES_PORT"],
        dbname=e["POSTGRES_DBNAME"],
        user=e["POSTGRES_USER"],
        password=e.get("POSTGRES_PASSWORD") or None,
        autocommit=True,
        connect_timeout=min(int(e.get("POSTGRES_CONNECT_TIMEOUT") or 10), 3),
        options=" ".join(
            [f"-c search_path={e.get('POSTGRES_SCHEMA') or 'public'}"]
            + [f"-c {setting.replace(' ', '')}" for setting in KEEPALIVE_SETTINGS]
        ),
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
    )


# ---------------------------------------------------------------------------------------
# The jobs table: what every process on the database reports
# ---------------------------------------------------------------------------------------

_CREATE = (
    "CREATE TABLE IF NOT EXISTS kpi_jobs (job TEXT PRIMARY KEY, holder TEXT NOT NULL,"
    " state TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, detail TEXT,"
    " heartbeat DOUBLE PRECISION NOT NULL, last_ok DOUBLE PRECISION,"
    " busy_since DOUBLE PRECISION)"
)
_UPSERT = (
    "INSERT INTO kpi_jobs (job, holder, state, since, detail, heartbeat, last_ok, busy_since)"
    " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (job) DO UPDATE SET"
    " holder = excluded.holder, state = excluded.state, since = excluded.since,"
    " detail = excluded.detail, heartbeat = excluded.heartbeat, last_ok = excluded.last_ok,"
    " busy_since = excluded.busy_since"
)
_SELECT = (
    "SELECT job, holder, state, since, detail, heartbeat, last_ok, busy_since FROM kpi_jobs"
)


class JobTable:
    """``kpi_jobs`` on the ledger's database. On PostgreSQL one connection of its own, kept
    between uses (a heartbeat every 2 s and every ``/v1/status`` would otherwise each open
    one) and opened again after a failure; SQLite's are cheap: one per use."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._created = False
        self._lock = threading.Lock()
        self._pg: Any = None

    def _run(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.database.backend == "sqlite":
            conn = sqlite3.connect(self.database.env["SQLITE_DBNAME"], timeout=5)
            try:
                with conn:
                    if not self._created:
                        conn.execute(_CREATE)
                    rows = conn.execute(statement.format(p="?"), params).fetchall()
            finally:
                conn.close()
        else:
            with self._lock:
                try:
                    if self._pg is None:
                        self._pg = connect(self.database)
                    pg = self._pg
                    if not self._created:
                        with pg.transaction():  # concurrent CREATE ... IF NOT EXISTS race
                            pg.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
                            pg.execute(_CREATE)
                    cursor = pg.execute(statement.format(p="%s"), params)
                    rows = cursor.fetchall() if cursor.description is not None else []
                except BaseException:
                    self._drop()
                    raise
        self._created = True
        return [tuple(r) for r in rows]

    def _drop(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                pg.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def publish(self, health: JobHealth) -> None:
        self._run(
            _UPSERT,
            (
                health.job,
                health.holder or holder_name(),
                health.state,
                health.since,
                health.detail,
                time.time(),
                health.last_ok,
                health.busy_since,
            ),
        )

    def read(self) -> dict[str, JobHealth]:
        rows = self._run(_SELECT)
        return {
            str(r[0]): JobHealth(
                str(r[0]),
                str(r[2]),
                float(r[3]),
                r[4],
                str(r[1]),
                float(r[5]),
                float(r[6]) if r[6] is not None else None,
                here=False,
                busy_since=float(r[7]) if r[7] is not None else None,
            )
            for r in rows
        }


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------


class Job:
    """A background step run every ``interval`` seconds, resilient and observable (module
    docstring). ``start`` and ``stop`` run it; ``health()`` says how it goes.

    ``open`` (called when the job takes the lead, and again after a failed step) prepares what
    ``step`` uses; ``close`` releases it (after a failed step, on losing the lead, at stop).
    ``heal`` is called after a database error (drop a pool's broken idle connections: after a
    server restart every pooled connection is dead, and each would fail one attempt).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        *,
        interval: float,
        lock: LeaderLock | None = None,
        table: JobTable | None = None,
        open: Callable[[], object] | None = None,
        close: Callable[[], object] | None = None,
        on_fatal: Callable[[Job], object] | None = None,
        give_up: float = GIVE_UP,
        clock: Callable[[], float] = time.time,
        heal: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self.interval = interval
        self.lock = lock
        self.table = table
        self._open = open
        self._close = close
        self.on_fatal = on_fatal
        self.give_up = give_up
        self.clock = clock
        self._heal = heal
        self.holder = holder_name()
        now = clock()
        self._health = JobHealth(name, STARTING, now, holder=self.holder)
        self._health_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._opened = False
        self._step_started: float | None = None
        self.steps = 0  # successful steps so far
        self.error: BaseException | None = None  # the last failure
        self._thread = threading.Thread(target=self._run, name=f"job-{name}", daemon=True)

    # -- running -------------------------------------------------------------------------
    def start(self) -> Job:
        self._thread.start()
        if self.table is not None:
            threading.Thread(target=self._beat, name=f"job-{self.name}-beat", daemon=True).start()
        return self

    def wake(self) -> None:
        """Run the next step now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():  # a step still running past the timeout: say so
            self._set(self.health().state, f"stopping: a step still runs after {timeout} s")
            return
        self._set(STOPPED, None)
        if self.table is not None:
            self.table.close()

    def opened(self) -> None:
        """What ``open`` prepares was prepared by the caller before ``start``."""
        self._opened = True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def leading(self) -> bool:
        return self.lock is None or self.lock.held

    def health(self) -> JobHealth:
        """The job's state; a step running for longer than ``BUSY`` seconds (a long catch-up,
        or a database that does not answer) shows in ``busy_since``, so that an ``ok`` from
        the last step is not read as "working now"."""
        with self._health_lock:
            health = self._health
        started = self._step_started
        if started is not None and self.clock() - started > BUSY:
            return replace(health, busy_since=started)
        return health

    def _set(self, state: str, detail: str | None, *, ok: bool = False) -> None:
        now = self.clock()
        with self._health_lock:
            old = self._health
            if old.state == STOPPED:
                return  # stopped is final
            changed = old.state != state or old.detail != detail
            new = replace(
                old,
                state=state,
                since=now if changed else old.since,
                detail=detail,
                last_ok=now if ok else old.last_ok,
                heartbeat=now,
            )
            self._health = new
        if changed:
            self._publish()

    def _publish(self) -> None:
        """Write this job's state to ``kpi_jobs`` if it leads (a report: never fatal)."""
        if self.table is None or not self.leading:
            return
        try:
            self.table.publish(self.health())
        except Exception as exc:  # the table is a report: the job goes on without it
            logger.debug("job %s: cannot publish its state: %s", self.name, exc)

    def _beat(self) -> None:
        """The heartbeat, in a thread of its own: a step that runs long (a catch-up of a big
        log) must not make the other processes think the leader is gone."""
        while not self._stop.wait(HEARTBEAT):
            self._publish()

    def _run(self) -> None:
        failing_since: float | None = None
        failures = 0
        backoff = self.interval
        while not self._stop.is_set():
            if not self._lead():
                self._pause(STANDBY_POLL)
                continue
            try:
                if not self._opened:
                    if self._open is not None:
                        self._open()
                    self._opened = True
                if self.lock is not None:
                    self.lock.check()
                self._step_started = self.clock()
                try:
                    self._step()
                finally:
                    self._step_started = None
            except Refusing as exc:
                self._refusing(str(exc))
                self._pause(self.interval)
                failing_since, failures, backoff = None, 0, self.interval
                continue
            except BaseException as exc:
                if self._stop.is_set():
                    break
                self.error = exc
                now = self.clock()
                database = is_database_error(exc)
                if failing_since is None:
                    failing_since = now
                    logger.warning(
                        "%s: %s; retrying with back-off (the job goes on)",
                        self.name,
                        describe(exc),
                        exc_info=not database,
                    )
                failures += 1
                self._set(RETRYING, describe(exc))
                self._reset()
                if database and self._heal is not None:
                    with contextlib.suppress(Exception):
                        self._heal()
                if (database and now - failing_since > self.give_up) or (
                    not database and failures >= BUG_ATTEMPTS
                ):
                    self._fail(exc, now - failing_since, failures)
                    return
                self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if failing_since is not None:
                logger.warning(
                    "%s: recovered after %.1f s (%d failed attempts)",
                    self.name,
                    self.clock() - failing_since,
                    failures,
                )
            failing_since, failures, backoff = None, 0, self.interval
            self.steps += 1
            self._set(OK, None, ok=True)
            self._pause(self.interval)
        self._reset(release=True)

    def _lead(self) -> bool:
        if self.lock is None:
            return True
        if self.lock.held:
            return True
        try:
            got = self.lock.try_acquire()
        except Exception as exc:
            self._set(RETRYING, f"cannot reach the database to take the lead: {describe(exc)}")
            return False
        if not got:
            self._set(STANDBY, "another process runs this job")
            return False
        logger.info("%s: this process (%s) now runs the job", self.name, self.holder)
        self._set(STARTING, "took the lead")  # reported at once, before a long open
        return True

    def _refusing(self, why: str) -> None:
        if self.health().state != REFUSING or self.health().detail != why:
            logger.error("%s: ALARM: %s", self.name, why)
        self._set(REFUSING, why)

    def _reset(self, *, release: bool = False) -> None:
        """Close what ``open`` prepared; on a lost lock (or at stop) give up the lead."""
        if self._opened and self._close is not None:
            try:
                self._close()
            except BaseException as exc:
                logger.debug("%s: closing after a failure: %s", self.name, exc)
        self._opened = False
        if self.lock is not None:
            lost = release
            if not lost:
                try:
                    self.lock.check()
                except Exception:
                    lost = True
            if lost:
                self.lock.release()

    def _fail(self, exc: BaseException, seconds: float, attempts: int) -> None:
        detail = f"gave up after {seconds:.0f} s and {attempts} attempts: {describe(exc)}"
        logger.error("%s: %s", self.name, detail)
        self._set(FAILED, detail)
        self._reset(release=True)
        if self.on_fatal is not None:
            self.on_fatal(self)

    def _pause(self, seconds: float) -> None:
        if self._wake.wait(seconds):
            self._wake.clear()


def describe(exc: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
