"""Who may call the API: principals and their bearer tokens.

A principal is a person or a system the ledger already knows: it has a key registered in the
log (``key.registered``), which is what signs its facts. ``kpi-ledger principal add NAME``
issues it a bearer token for the HTTP API; the token is printed once and stored only as its
SHA-256 (``kpi_api_principals``, in the ledger's database), so a copy of the database gives no
one a way in. Adding a principal again replaces its token (the old one stops working);
``principal revoke`` withdraws it. What a principal may do is not stored here: roles and
unit scopes come from the organisation facts in the log (``api/access.py``).

A running service remembers a token's principal for ``remember`` seconds (2 in ``serve``), so
that a request costs no token query; the price is that a token revoked by another process
(``kpi-ledger principal revoke``) may still be accepted by a running service for up to that
long. A revoke or a new token through the same ``Principals`` forgets at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore

from ledger.locks import SCHEMA_LOCK_ID

TOKEN_PREFIX = "kpi_"
MAX_REMEMBERED = 10_000  # tokens remembered at once (expired ones are dropped when full)
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class PrincipalError(ValueError):
    """An unknown or unusable principal name."""


@dataclass(frozen=True)
class PrincipalRecord:
    name: str
    issued_at: str
    revoked_at: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe, with a prefix that secret scanners can recognise."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Principals:
    """The token table, on the ledger's own datastore (SQLite or PostgreSQL)."""

    def __init__(self, datastore: Any, *, remember: float = 0.0) -> None:
        self.datastore = datastore
        self.remember = remember
        self._known: dict[str, tuple[str, float]] = {}  # token hash -> (name, until)
        self._lock = threading.Lock()
        self.postgres = isinstance(datastore, PostgresDatastore)
        schema = getattr(datastore, "schema", "") if self.postgres else ""
        self.table = f'"{schema}".kpi_api_principals' if schema else "kpi_api_principals"
        with self._cursor() as c:
            if self.postgres:  # concurrent CREATE TABLE IF NOT EXISTS races: one at a time
                c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                " name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,"
                " issued_at TEXT NOT NULL, revoked_at TEXT)"
            )

    @contextmanager
    def _cursor(self, *, commit: bool = True) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def issue(self, name: str, *, now: dt.datetime | None = None) -> str:
        """A new token for ``name`` (replacing any earlier one); returns it (shown once)."""
        if not NAME_PATTERN.fullmatch(name):
            raise PrincipalError(f"{name!r} is not a principal name (a-z, 0-9, '.', '_', '-')")
        token = new_token()
        when = _stamp(now)
        with self._cursor() as c:
            c.execute(
                self._sql(
                    f"INSERT INTO {self.table} (name, token_hash, issued_at, revoked_at)"
                    " VALUES (?, ?, ?, NULL) ON CONFLICT (name) DO UPDATE SET"
                    " token_hash = excluded.token_hash, issued_at = excluded.issued_at,"
                    " revoked_at = NULL"
                ),
                (name, token_hash(token), when),
            )
        self._forget(name)
        return token

    def revoke(self, name: str, *, now: dt.datetime | None = None) -> bool:
        """Withdraw ``name``'s token; False if it had none in force."""
        with self._cursor() as c:
            c.execute(
                self._sql(f"SELECT name FROM {self.table} WHERE name = ? AND revoked_at IS NULL"),
                (name,),
            )
            if c.fetchone() is None:
                return False
            c.execute(
                self._sql(f"UPDATE {self.table} SET revoked_at = ? WHERE name = ?"),
                (_stamp(now), name),
            )
        self._forget(name)
        return True

    def remembered(self, token: str) -> str | None:
        """The token's principal if it was looked up less than ``remember`` seconds ago (no
        query: safe to call from the event loop); None: ask ``who``."""
        known = self._known.get(token_hash(token))
        if known is not None and known[1] > time.monotonic():
            return known[0]
        return None

    def who(self, token: str) -> str | None:
        """The principal a token belongs to (None: unknown or revoked)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        digest = token_hash(token)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        with self._cursor(commit=False) as c:
            c.execute(
                self._sql(
                    f"SELECT name FROM {self.table} WHERE token_hash = ? AND revoked_at IS NULL"
                ),
                (digest,),
            )
            row = c.fetchone()
        if row is None:
            return None
        name = str(row["name"] if not isinstance(row, tuple) else row[0])
        if self.remember > 0:
            with self._lock:
                if len(self._known) >= MAX_REMEMBERED:
                    self._known = {d: k for d, k in self._known.items() if k[1] > now}
                    if len(self._known) >= MAX_REMEMBERED:
                        self._known.clear()
                self._known[digest] = (name, now + self.remember)
        return name

    def _forget(self, name: str) -> None:
        with self._lock:
            self._known = {d: k for d, k in self._known.items() if k[0] != name}

    def all(self) -> list[PrincipalRecord]:
        with self._cursor(commit=False) as c:
            c.execute(f"SELECT name, issued_at, revoked_at FROM {self.table} ORDER BY name")
            rows = c.fetchall()
        return [PrincipalRecord(str(r["name"]), str(r["issued_at"]), r["revoked_at"]) for r in rows]


def _stamp(now: dt.datetime | None) -> str:
    when = now or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
