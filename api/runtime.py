"""What a running service holds: the ledger, the read models, their runner, the checkpointer.

``Runtime.open(settings)`` opens the ledger service on the configured database, the token
table, a read-only handle on the evaluation views (for requests), starts the projection
runner (the one writer of the views: LISTEN/NOTIFY on PostgreSQL, polling on SQLite) and a
checkpointer that signs a checkpoint every ``checkpoint_seconds`` when the log has grown, so
that a receipt is available shortly after each write. ``close`` stops them in reverse order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.access import Organisation
from api.principals import Principals
from api.writer import GroupWriter
from domain.service import LedgerService, TimeWindow
from ledger.checkpoints import Checkpointer
from ledger.config import Database, parse_database
from ledger.home import LedgerHome
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


@dataclass(frozen=True)
class Settings:
    database: Database
    home: LedgerHome
    checkpoint_seconds: float = 1.0
    max_body: int = MAX_BODY
    projections: bool = True  # run the projection runner in this process
    token_seconds: float = TOKEN_SECONDS  # how long a token's principal is remembered
    quiet_gc: bool = False  # freeze the heap once started (a serving process: api/app.py)

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
            runner = start_runner(settings.database) if settings.projections else None
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
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.runner is not None:
            self.runner.stop()
        close_view(self.view)
        if self.owns_service:
            self.service.close()


def _start_checkpointer(settings: Settings, service: LedgerService) -> Checkpointer | None:
    """A checkpointer signing every ``checkpoint_seconds`` (None: no keys, or 0 seconds)."""
    home = settings.home
    if not home.exists() or settings.checkpoint_seconds <= 0:
        return None
    checkpointer = Checkpointer(service.sealed, home.ledger_key(), home.state_path)
    checkpointer.run_every(settings.checkpoint_seconds)
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
    the N request-serving workers runs neither (and one of each runs in all)."""

    def __init__(self, settings: Settings) -> None:
        home = settings.home
        signer = home.facts_key() if home.exists() else None
        self.service = LedgerService(settings.database, ledger_signer=signer)
        self.runner: CatchUpRunner | SubscriptionRunner | None = None
        self.checkpointer: Checkpointer | None = None
        try:
            if settings.projections:
                self.runner = start_runner(settings.database)
            self.checkpointer = _start_checkpointer(settings, self.service)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.runner is not None:
            self.runner.stop()
        self.service.close()
