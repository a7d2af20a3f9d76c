"""Fixtures for ledger tests: a small real ledger, and raw SQL access to attack it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domain.service import LedgerService
from ledger.checkpoints import Checkpointer
from ledger.config import Database, parse_database
from ledger.home import LedgerHome
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey, VerifierKey


@dataclass
class Ledger:
    """A ledger on a real database with its home, admin and two staff keys."""

    database: Database
    home: LedgerHome
    service: LedgerService
    admin: SigningKey
    users: dict[str, SigningKey] = field(default_factory=dict)

    @property
    def log_keys(self) -> list[VerifierKey]:
        return self.home.log_keys()

    def checkpointer(self) -> Checkpointer:
        return Checkpointer(self.service.sealed, self.home.ledger_key(), self.home.state_path)

    def attest(self, user: str, n: int, *, start: int = 0) -> list[int]:
        envelopes = [
            sign_fact(
                self.users[user],
                "document.attested",
                {"sha256": f"{start + i:064x}", "title": f"Hồ sơ {start + i}"},
            ).to_bytes()
            for i in range(n)
        ]
        outcomes = self.service.submit_many(envelopes)
        return [o.seq for o in outcomes]  # type: ignore[union-attr]

    def reopen(self) -> None:
        """A new service instance (no cached frontier), as after a restart."""
        self.service.close()
        self.service = LedgerService(self.database)

    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run SQL behind the application's back (the attacker's access)."""
        if self.database.backend == "sqlite":
            conn = sqlite3.connect(self.database.env["SQLITE_DBNAME"])
            try:
                rows = conn.execute(statement.replace("%s", "?"), params).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        with psycopg.connect(self.database.url, autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    @property
    def events(self) -> str:
        """The events table (the library names it after the application on PostgreSQL)."""
        return str(self.service.sealed.events_table_name)  # type: ignore[attr-defined]

    def event_key(self) -> str:
        return "rowid" if self.database.backend == "sqlite" else "notification_id"


def make_ledger(url: str, home_dir: Path) -> Ledger:
    database = parse_database(url)
    home = LedgerHome(home_dir)
    ledger_key = home.create("kpi.test/ledger")
    service = LedgerService(database)
    admin = SigningKey.generate("admin")
    service.bootstrap(ledger_key, admin)
    ledger = Ledger(database, home, service, admin)
    for name in ("lan", "minh"):
        key = SigningKey.generate(name)
        service.submit(key_registration(admin, key.verifier(), admin=False).to_bytes())
        ledger.users[name] = key
    return ledger


@pytest.fixture
def ledger(db_url: str, tmp_path: Path) -> Iterator[Ledger]:
    built = make_ledger(db_url, tmp_path / "home")
    try:
        yield built
    finally:
        built.service.close()
