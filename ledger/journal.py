"""The refusal journal: who tried to record what, and which rule refused it.

A refused fact records nothing in the log: the Merkle log holds only accepted facts, and a
refusal must not change it. Yet some refusals are themselves a signal (domain.md's
anti-gaming signals: "self-approval attempts"), so ``LedgerService`` writes every refusal of
a submitted fact here, after the batch, in one multi-row insert: ``kpi_refusals``, a table
on the ledger's database beside the log, outside it (not sealed, not exported, not part of
any checkpoint: it is a report, like ``kpi_jobs``).

One row per refused submission: ``id`` (increasing), ``recorded_at`` (the ledger's clock,
UTC, microseconds), ``actor`` (as signed; NULL if the envelope could not be parsed),
``fact_type``, ``rule``, ``detail`` (at most ``MAX_DETAIL`` characters), ``fact_sha256``
(hex SHA-256 of the envelope bytes; NULL when the service was handed only the parse's
refusal, e.g. over HTTP a malformed body) and ``claimed_at`` (the time the fact claims).
Duplicates answered with their original result are not refusals, and a batch that failed as
a whole (``WriteFailed``) refused no fact: neither is journaled. The same refused envelope
sent twice is two attempts, two rows.

Writing never changes an answer: if the insert fails, a warning is logged and the refusal
stands. Nothing in the journal is needed to verify the log; it may be pruned
(``Journal.prune(before)``); the retention we advise is ``RETENTION_DAYS`` (400 days: a
year of periods and a margin for appeals; docs/inspection.md). What one caller can make it
store is bounded: at most 1,000 rows per batch (the batch's bound), each under a kilobyte
(the detail, actor and fact type are cut to ``MAX_DETAIL`` and ``MAX_NAME`` characters).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore

from ledger.locks import SCHEMA_LOCK_ID
from signing.facts import Fact, read_fact

logger = logging.getLogger(__name__)

TABLE = "kpi_refusals"
MAX_DETAIL = 500  # characters of a refusal's detail kept
MAX_NAME = 128  # characters of an actor or fact type kept (as signed: anything a caller sends)
MAX_TIME = 40  # characters of a claimed time kept
SELF_APPROVAL = "separation.self_approval"  # domain/errors.py's SELF_APPROVAL
# The self-approval-attempt flag: an actor with at least this many ``separation.self_approval``
# refusals in one month (UTC, of the ledger's clock). A constant until the rule packs carry
# a threshold of their own (domain/policy.py's Flags).
SELF_APPROVAL_ATTEMPTS = 3
FLAG_KIND = "self_approval_attempts"
MAX_FLAG_REFUSALS = 100  # attempts named in one flag (the count is always the true one)
RETENTION_DAYS = 400  # the advised retention (docs/inspection.md)


@dataclass(frozen=True)
class Refused:
    """A refusal to journal, before it has an id and a time."""

    rule: str
    detail: str
    actor: str | None
    fact_type: str | None
    fact_sha256: str | None
    claimed_at: str | None

    @classmethod
    def of(
        cls,
        raw: object,
        rule: str,
        detail: str,
        actor: str | None,
        fact_type: str | None,
    ) -> Refused:
        """The journal row of ``raw`` (the envelope as submitted: bytes, text, a parsed
        ``Fact``, or only a refusal) refused by ``rule``. The actor and type are the
        envelope's, as signed, when it can be read; else the refusal's."""
        data = raw.encode() if isinstance(raw, str) else raw
        fact: Fact | None = raw if isinstance(raw, Fact) else None
        if isinstance(data, bytes):
            try:
                fact = read_fact(data, strict=False)
            except Exception:  # unreadable: the hash is all there is
                fact = None
        envelope = fact.envelope_bytes if fact is not None else data
        return cls(
            rule=rule[:MAX_NAME],
            detail=detail[:MAX_DETAIL],
            actor=_cut(fact.actor if fact is not None else actor, MAX_NAME),
            fact_type=_cut(fact.type if fact is not None else fact_type, MAX_NAME),
            fact_sha256=(
                hashlib.sha256(envelope).hexdigest() if isinstance(envelope, bytes) else None
            ),
            claimed_at=_cut(fact.time if fact is not None else None, MAX_TIME),
        )


@dataclass(frozen=True)
class RefusalRecord:
    """A journaled refusal."""

    id: int
    recorded_at: str
    actor: str | None
    fact_type: str | None
    rule: str
    detail: str
    fact_sha256: str | None
    claimed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "recorded_at": self.recorded_at,
            "actor": self.actor,
            "fact_type": self.fact_type,
            "rule": self.rule,
            "detail": self.detail,
            "fact_sha256": self.fact_sha256,
            "claimed_at": self.claimed_at,
        }


@dataclass(frozen=True)
class AttemptsFlag:
    """An actor's self-approval attempts in one month, at or above the threshold."""

    actor: str
    period: str  # YYYY-MM, of the ledger's clock (UTC)
    count: int
    refusals: tuple[RefusalRecord, ...]  # the first MAX_FLAG_REFUSALS of them

    def as_dict(self) -> dict[str, Any]:
        subject = f"{self.actor}/{self.period}"
        return {
            "key": f"{FLAG_KIND}/{subject}",
            "kind": FLAG_KIND,
            "subject": subject,
            "source": "journal",
            "facts": [],  # nothing of it is in the log
            "count": self.count,
            "refusals": [
                {
                    "id": r.id,
                    "recorded_at": r.recorded_at,
                    "fact_type": r.fact_type,
                    "fact_sha256": r.fact_sha256,
                }
                for r in self.refusals
            ],
            "why": (
                f"{self.count} self-approval attempts (distinct signed envelopes) refused in"
                f" {self.period}"
                f" (at least {SELF_APPROVAL_ATTEMPTS}: ledger/journal.py)"
            ),
        }


def _cut(text: str | None, size: int) -> str | None:
    return text[:size] if text is not None else None


def stamp(when: dt.datetime) -> str:
    """The journal's time format: UTC, microseconds, ``Z`` (sorts as it reads)."""
    utc = when.astimezone(dt.UTC) if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


_COLUMNS = "id, recorded_at, actor, fact_type, rule, detail, fact_sha256, claimed_at"


class Journal:
    """``kpi_refusals`` on the ledger's own datastore (SQLite or PostgreSQL). The table is
    created on first use (on PostgreSQL under ``SCHEMA_LOCK_ID``, in a transaction:
    concurrent ``CREATE TABLE IF NOT EXISTS`` races)."""

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        self.postgres = isinstance(datastore, PostgresDatastore)
        schema = getattr(datastore, "schema", "") if self.postgres else ""
        self.table = f'"{schema}".{TABLE}' if schema else TABLE
        self._created = False

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        self.create()
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def create(self) -> None:
        if self._created:
            return
        key = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        with self.datastore.transaction(commit=True) as c:
            if self.postgres:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (id {key},"
                " recorded_at TEXT NOT NULL, actor TEXT, fact_type TEXT, rule TEXT NOT NULL,"
                " detail TEXT NOT NULL, fact_sha256 TEXT, claimed_at TEXT)"
            )
            c.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_actor ON {self.table} (actor, id)")
            c.execute(
                f"CREATE INDEX IF NOT EXISTS {TABLE}_rule ON {self.table} (rule, recorded_at)"
            )
        self._created = True

    def record(self, rows: Sequence[Refused], now: dt.datetime) -> bool:
        """Journal ``rows`` in one insert, all at ``now``; False (and a warning) if that
        failed: the refusals they describe stand either way."""
        if not rows:
            return True
        when = stamp(now)
        try:
            with self._cursor(commit=True) as c:
                c.executemany(
                    self._sql(
                        f"INSERT INTO {self.table} (recorded_at, actor, fact_type, rule,"
                        " detail, fact_sha256, claimed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    ),
                    [
                        (when, r.actor, r.fact_type, r.rule, r.detail, r.fact_sha256, r.claimed_at)
                        for r in rows
                    ],
                )
        except Exception as exc:
            self._created = False  # a dropped table is created again next time
            logger.warning("%d refusals not journaled (%s): %s", len(rows), TABLE, exc)
            return False
        return True

    def page(
        self,
        *,
        actor: str | None = None,
        rule: str | None = None,
        since: dt.datetime | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[RefusalRecord]:
        """The newest refusals first, with ``id`` below ``before`` (the cursor)."""
        where, params = self._where(actor=actor, rule=rule, since=since)
        if before is not None:
            where.append("id < ?")
            params.append(before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._cursor(commit=False) as c:
            c.execute(
                self._sql(f"SELECT {_COLUMNS} FROM {self.table}{clause} ORDER BY id DESC LIMIT ?"),
                (*params, limit),
            )
            return [_record(r) for r in c.fetchall()]

    @staticmethod
    def _where(
        *, actor: str | None, rule: str | None, since: dt.datetime | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if rule is not None:
            where.append("rule = ?")
            params.append(rule)
        if since is not None:
            where.append("recorded_at >= ?")
            params.append(stamp(since))
        return where, params

    def attempts(
        self, *, actor: str | None = None, threshold: int = SELF_APPROVAL_ATTEMPTS
    ) -> list[AttemptsFlag]:
        """Actors with at least ``threshold`` self-approval refusals in a month (UTC), by
        actor and month, each with the attempts (oldest first). Attempts are counted as
        distinct envelopes: the same signed envelope sent again — a client's retry, or
        someone else resubmitting it — is one attempt, not several."""
        where, params = self._where(actor=actor, rule=SELF_APPROVAL, since=None)
        where.append("actor IS NOT NULL")
        period = "substr(recorded_at, 1, 7)"
        with self._cursor(commit=False) as c:
            c.execute(
                self._sql(
                    f"SELECT actor, {period} AS period, {_ENVELOPES} AS n FROM {self.table}"
                    f" WHERE {' AND '.join(where)} GROUP BY actor, {period}"
                    f" HAVING {_ENVELOPES} >= ? ORDER BY actor, {period}"
                ),
                (*params, threshold),
            )
            groups = [(str(r["actor"]), str(r["period"]), int(r["n"])) for r in c.fetchall()]
            flags = []
            for who, month, count in groups:
                c.execute(
                    self._sql(
                        f"SELECT {_COLUMNS} FROM {self.table} WHERE rule = ? AND actor = ?"
                        f" AND {period} = ? ORDER BY id LIMIT ?"
                    ),
                    (SELF_APPROVAL, who, month, MAX_FLAG_REFUSALS),
                )
                records = tuple(_record(r) for r in c.fetchall())
                flags.append(AttemptsFlag(who, month, count, records))
        return flags

    def prune(self, before: dt.datetime) -> int:
        """Delete the refusals recorded before ``before``; how many went."""
        when = (stamp(before),)
        with self._cursor(commit=True) as c:
            c.execute(
                self._sql(f"SELECT COUNT(*) AS n FROM {self.table} WHERE recorded_at < ?"), when
            )
            row = c.fetchone()
            c.execute(self._sql(f"DELETE FROM {self.table} WHERE recorded_at < ?"), when)
        return int(row["n"])


# distinct envelopes (an unreadable one, which has no hash, counts on its own)
_ENVELOPES = "COUNT(DISTINCT COALESCE(fact_sha256, CAST(id AS TEXT)))"


def _record(row: Any) -> RefusalRecord:
    """A row by its column names (``sqlite3.Row`` and psycopg's ``dict_row`` both have them)."""
    return RefusalRecord(
        int(row["id"]),
        str(row["recorded_at"]),
        row["actor"],
        row["fact_type"],
        str(row["rule"]),
        str(row["detail"]),
        row["fact_sha256"],
        row["claimed_at"],
    )
