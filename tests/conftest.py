"""Shared pytest fixtures.

Sections (add new fixtures to the section they belong to, or start a new one):

* Databases: ``pg_server``, ``pg_url``, ``sqlite_url``, ``db_url``.
* Ledgers: ``ledger`` (a ``Ledger``: a started ledger with its home, an administrator, two
  staff keys, and raw SQL access to attack it), ``make_ledger`` to build more.

``tests/`` is not a package: helper modules next to this file (such as
``pg.py``) are imported by bare name, because pytest puts this directory on
``sys.path``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pg
import psycopg
import pytest

from domain.service import LedgerService
from ledger.checkpoints import Checkpointer
from ledger.config import Database, parse_database
from ledger.home import LedgerHome
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey, VerifierKey

# --------------------------------------------------------------------------- #
# Databases
#
# Every test that takes ``db_url`` runs twice, once per backend the product
# supports. PostgreSQL is real (see tests/pg.py for how the server is chosen);
# if none can be found or started, those tests ERROR, they are never skipped.
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """libpq URL of the session's PostgreSQL server (may CREATE DATABASE)."""
    yield pg.server_dsn()
    pg.shutdown()  # stops a throwaway cluster, if this process started one


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """``postgresql://user@host:port/kpi_test_<hex>``: a new empty database, dropped after."""
    with pg.fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """``sqlite:///<tmp_path>/ledger.db`` (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once for SQLite and once for PostgreSQL."""
    # Looked up lazily, so the sqlite run never touches PostgreSQL.
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL through a fixture ``postgres``."""
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


# --------------------------------------------------------------------------- #
# Ledgers
# --------------------------------------------------------------------------- #


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

    def truncate(self, cut: int) -> None:
        """Remove entries ``cut`` and after, their events and the nodes covering them, as an
        insider with database access would; then reopen the service (no cached frontier)."""
        size = self.service.sealed.log_size()
        rows = self.sql("SELECT notification_id FROM log_entries WHERE seq >= %s", (cut,))
        for (nid,) in rows:
            self.sql(f"DELETE FROM {self.events} WHERE {self.event_key()} = %s", (nid,))
        self.sql("DELETE FROM log_entries WHERE seq >= %s", (cut,))
        for level in range(1, max(size, 2).bit_length() + 1):
            self.sql(
                "DELETE FROM log_nodes WHERE level = %s AND (idx + 1) * %s > %s",
                (level, 2**level, cut),
            )
        self.reopen()

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
