"""What a running service holds: the ledger, the read models, their runner, the checkpointer.

``Runtime.open(settings)`` opens the ledger service on the configured database, the token
table, a read-only handle on the evaluation views (for requests), starts the projection
runner (the one writer of the views: LISTEN/NOTIFY on PostgreSQL, polling on SQLite) and a
checkpointer that signs a checkpoint every ``checkpoint_seconds`` when the log has changed,
so that a receipt is available shortly after each write. ``close`` stops them in reverse order.

Both background jobs are ``ledger.jobs.Job``s: they retry through database errors, elect one
leader among all the services on the database (the others wait in standby and take over when
it dies), and report their health (``jobs()``, shown by ``/v1/status`` and ``/v1/ready``).
The checkpointer seals only entries the intake would accept (``domain/admission.py``). A job
that gives up calls ``on_fatal``: under ``kpi-ledger serve`` (``exit_on_fatal``) the service
stops and exits with status 1 (``FATAL`` holds why) rather than run on without it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.access import Organisation
from api.principals import Principals
from api.writer import GroupWriter
from domain.admission import sealing_checkpointer
from domain.service import LedgerService, TimeWindow
from ledger.checkpoints import Checkpointer
from ledger.config import Database, parse_database
from ledger.home import LedgerHome
from ledger.jobs import FAILED, STALE, STANDBY, Job, JobHealth, JobTable, describe, heal_pool
from ledger.proof_cache import ProofCache
from projections.runners import (
    CatchUpRunner,
    SubscriptionRunner,
    close_view,
    open_view,
    start_runner,
)
from projections.store import _ViewSQL

MAX_BODY = 4 * 1024 * 1024  # a batch of 1,000 envelopes is about 1.5 MB
MAX_BATCH = 1000
TOKEN_SECONDS = 2.0  # a revoked token keeps working in a running service for at most this
READY_SECONDS = 2.0  # how long /v1/ready waits for a database connection
STOP_GRACE = 10  # seconds uvicorn waits for open requests (a feed never ends) at shutdown
JOBS = ("checkpointer", "projections")
OFF, NO_LEADER, UNKNOWN = "off", "no leader", "unknown"
FATAL: list[str] = []  # why a job gave up (read by ``kpi-ledger serve`` for its exit status)

logger = logging.getLogger("kpi_ledger.runtime")


@dataclass(frozen=True)
class Settings:
    database: Database
    home: LedgerHome
    checkpoint_seconds: float = 1.0
    max_body: int = MAX_BODY
    projections: bool = True  # run the projection runner in this process
    token_seconds: float = TOKEN_SECONDS  # how long a token's principal is remembered
    quiet_gc: bool = False  # freeze the heap once started (a serving process: api/app.py)
    exit_on_fatal: bool = False  # a job that gives up stops the process (kpi-ledger serve)
    jobs_elsewhere: bool = False  # a worker: the jobs run in its supervisor (api/workers.py)

    def to_json(self) -> str:
        """What a worker process needs to open the same runtime (``from_json``): every
        field, the database as its URL and the home as its path."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["database"] = self.database.url
        fields["home"] = str(self.home.path)
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        fields = json.loads(text)
        fields["database"] = parse_database(fields["database"])
        fields["home"] = LedgerHome(Path(fields["home"]))
        return cls(**fields)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        service: LedgerService,
        principals: Principals,
        view: _ViewSQL,
        runner: CatchUpRunner | SubscriptionRunner | None,
        checkpointer: Checkpointer | None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.principals = principals
        self.organisation = Organisation(service)
        self.view = view
        self.proofs = ProofCache(service.sealed, follow=True)
        self.runner = runner
        self.checkpointer = checkpointer
        self.owns_service = True
        self.writer = GroupWriter(service)
        self.jobs_table = JobTable(settings.database)  # what other processes report

    @classmethod
    def open(cls, settings: Settings, *, service: LedgerService | None = None) -> Runtime:
        """Open everything; ``service``: an already open ledger service to use (its owner
        closes it), for tests that drive the ledger's clock."""
        home = settings.home
        owned = service is None
        if service is None:
            signer = home.facts_key() if home.exists() else None
            service = LedgerService(
                settings.database, ledger_signer=signer, window=TimeWindow.from_env()
            )
        opened: list[Any] = [service] if owned else []
        try:
            principals = Principals(
                service.sealed.datastore,  # type: ignore[attr-defined]
                remember=settings.token_seconds,
            )
            view = open_view(settings.database)
            opened.append(view)
            runner = (
                start_runner(settings.database, standby=True, on_fatal=_on_fatal(settings))
                if settings.projections
                else None
            )
            opened.append(runner)
            checkpointer = _start_checkpointer(settings, service)
        except BaseException:
            for thing in reversed(opened):
                _close(thing)
            raise
        runtime = cls(settings, service, principals, view, runner, checkpointer)
        runtime.owns_service = owned
        return runtime

    def close(self) -> None:
        self.writer.close()
        self.jobs_table.close()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.runner is not None:
            self.runner.stop()
        close_view(self.view)
        if self.owns_service:
            self.service.close()

    def database_answers(self, timeout: float = READY_SECONDS) -> str:
        """``ok``, or why the database cannot be used now: a pooled connection must answer
        ``SELECT 1`` within ``timeout`` seconds (a readiness probe must answer quickly; a
        request would wait for the pool's longer timeout)."""
        pool = getattr(getattr(self.service.sealed, "datastore", None), "pool", None)
        try:
            if pool is not None and hasattr(pool, "connection"):
                with pool.connection(timeout=timeout) as conn:
                    conn.execute("SELECT 1")
            else:
                self.service.sealed.log_size()
        except Exception as exc:
            return f"cannot be read: {describe(exc)}"
        return "ok"

    def heal(self) -> None:
        """After a lost database connection: drop the broken idle connections of the ledger's
        pool and of the views' (``LedgerService.heal``)."""
        self.service.heal()
        heal_pool(getattr(self.view, "datastore", None))

    def jobs(self) -> dict[str, JobHealth]:
        """Each background job's health, as true for this process as it can be told: a job
        this process leads reports itself; one led elsewhere (the supervisor of workers, a
        second host) reports through ``kpi_jobs``, and is ``no leader`` when its heartbeat is
        stale; a job this service does not run at all is ``off``."""
        local: dict[str, Job | None] = {
            "checkpointer": self.checkpointer.job if self.checkpointer is not None else None,
            "projections": self.runner.job if self.runner is not None else None,
        }
        return job_health(self.settings, self.jobs_table, local)


def job_health(
    settings: Settings, table: JobTable, local: dict[str, Job | None]
) -> dict[str, JobHealth]:
    now = time.time()
    shared: dict[str, JobHealth] | None = None
    unreadable: str | None = None
    out: dict[str, JobHealth] = {}
    for name in JOBS:
        job = local.get(name)
        if job is not None and job.health().state != STANDBY:
            out[name] = job.health()
            continue
        if shared is None and unreadable is None:
            try:
                shared = table.read()
            except Exception as exc:
                unreadable = describe(exc)
        row = (shared or {}).get(name)
        if row is not None and row.heartbeat is not None and now - row.heartbeat <= STALE:
            out[name] = row
        elif row is not None:
            out[name] = JobHealth(
                name,
                NO_LEADER,
                row.heartbeat or row.since,
                f"last reported by {row.holder}: {row.summary()}",
                row.holder,
                row.heartbeat,
                row.last_ok,
                here=False,
            )
        elif unreadable is not None:  # who leads it cannot be read: say so, not a guess
            detail = f"the database cannot be read: {unreadable}"
            out[name] = JobHealth(name, UNKNOWN, now, detail, here=False)
        elif job is not None:
            out[name] = job.health()  # in standby, and nobody has reported yet
        elif settings.jobs_elsewhere:  # a worker: its supervisor runs them
            detail = "no process has reported running it yet"
            out[name] = JobHealth(name, NO_LEADER, now, detail, here=False)
        else:
            out[name] = JobHealth(name, OFF, now, here=False)
    return out


def _on_fatal(settings: Settings) -> Any:
    """What a job that gives up does: record why, and stop the serving process."""

    def fatal(job: Job) -> None:
        reason = f"{job.name}: {job.health().summary()}"
        FATAL.append(reason)
        logger.critical("background job failed for good, stopping the service: %s", reason)
        if settings.exit_on_fatal:
            os.kill(os.getpid(), signal.SIGTERM)

    return fatal


def _start_checkpointer(settings: Settings, service: LedgerService) -> Checkpointer | None:
    """A checkpointer signing every ``checkpoint_seconds`` (None: no keys, or 0 seconds): one
    process on the database signs (leader election), and only entries the intake would
    have accepted (the rule replay)."""
    home = settings.home
    if not home.exists() or settings.checkpoint_seconds <= 0:
        return None
    checkpointer = sealing_checkpointer(service.sealed, home)
    checkpointer.run_every(
        settings.checkpoint_seconds, database=settings.database, on_fatal=_on_fatal(settings)
    )
    return checkpointer


def _close(thing: Any) -> None:
    if thing is None:
        return
    if isinstance(thing, LedgerService):
        thing.close()
    elif isinstance(thing, CatchUpRunner | SubscriptionRunner):
        thing.stop()
    else:
        close_view(thing)


class Background:
    """The runtime's two background jobs, the projection runner and the checkpointer, on
    their own: what ``serve --workers N`` runs in its supervising process, so that each of
    the N request-serving workers runs neither (and one of each runs in all). ``failed`` is
    set when a job has given up (the supervisor then stops the service with status 1)."""

    def __init__(self, settings: Settings) -> None:
        home = settings.home
        signer = home.facts_key() if home.exists() else None
        self.settings = settings
        self.service = LedgerService(settings.database, ledger_signer=signer)
        self.runner: CatchUpRunner | SubscriptionRunner | None = None
        self.checkpointer: Checkpointer | None = None
        fatal = _on_fatal(replace_settings(settings, exit_on_fatal=False))
        try:
            if settings.projections:
                self.runner = start_runner(settings.database, standby=True, on_fatal=fatal)
            self.checkpointer = _start_checkpointer(
                replace_settings(settings, exit_on_fatal=False), self.service
            )
        except BaseException:
            self.close()
            raise

    @property
    def failed(self) -> bool:
        jobs = [self.runner.job if self.runner is not None else None]
        jobs.append(self.checkpointer.job if self.checkpointer is not None else None)
        return any(j is not None and j.health().state == FAILED for j in jobs)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.runner is not None:
            self.runner.stop()
        self.service.close()


replace_settings = dataclasses.replace
