"""Where the read models live: two tables beside the log, in the same database.

``kpi_view_docs`` holds every read model as JSON documents keyed by ``(view, key)``, with the
columns the queries filter on (employee, agency, period); ``kpi_view_streams`` indexes which
streams hold the facts of a subject (``employee/period`` for work items and ratings) so that
as-of replay reads a handful of streams instead of the whole log; ``kpi_view_sheet_rows``
holds each employee period's sheet as rows appended once per fact (``projections/sheet.py``).
The position the views reflect is the library's tracking record (notification id), written
in the **same transaction** as the rows: exactly once, on both backends.

``SQLiteEvaluationView`` and ``PostgresEvaluationView`` are ``eventsourcing`` tracking
recorders (the classes ``ProjectionRunner`` builds views from); the SQL they share is in
``_ViewSQL``, written once with ``?`` placeholders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder

from ledger.locks import SCHEMA_LOCK_ID
from projections.facts import Fact, decode

APP_NAME = "KpiLedger"  # the application whose notifications the views track
_CHUNK = 500

_TABLES = [
    "CREATE TABLE IF NOT EXISTS {s}kpi_view_docs ("
    " view TEXT NOT NULL, key TEXT NOT NULL, employee TEXT, agency TEXT, period TEXT,"
    " doc TEXT NOT NULL, PRIMARY KEY (view, key))",
    # ``key`` last: a ``find`` (ordered by key) reads these indexes in order instead of
    # walking the primary key over every document of the view
    "CREATE INDEX IF NOT EXISTS kpi_view_docs_by_place"
    " ON {s}kpi_view_docs (view, agency, period, key)",
    "CREATE INDEX IF NOT EXISTS kpi_view_docs_by_employee"
    " ON {s}kpi_view_docs (view, employee, key)",
    "CREATE TABLE IF NOT EXISTS {s}kpi_view_streams ("
    " subject TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,"
    " PRIMARY KEY (subject, stream))",
    "CREATE INDEX IF NOT EXISTS kpi_view_streams_stream ON {s}kpi_view_streams (stream)",
    "CREATE TABLE IF NOT EXISTS {s}kpi_view_sheet_rows ("
    " subject TEXT NOT NULL, seq BIGINT NOT NULL, item TEXT, row TEXT NOT NULL,"
    " PRIMARY KEY (subject, seq))",
]


@dataclass(frozen=True)
class Put:
    view: str
    key: str
    doc: dict[str, Any]
    employee: str | None = None
    agency: str | None = None
    period: str | None = None


@dataclass(frozen=True)
class SheetRow:
    """One row of a sheet: the fact at ``seq`` in compact form, with its work item."""

    subject: str  # employee/period
    seq: int
    item: str | None
    row: list[Any]


@dataclass(frozen=True)
class LogRow:
    seq: int
    notification_id: int
    stream: str
    state: bytes


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _ViewSQL:
    """The SQL both backends share. Subclasses give the cursor, placeholders and names."""

    schema_prefix = ""
    events_table = "stored_events"
    event_id_column = "rowid"

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _sql(self, text: str) -> str:
        return text

    def _stream_param(self, stream: str) -> Any:
        return stream

    def _stream_text(self, value: Any) -> str:
        """A stream id as the canonical UUID text (SQLite stores 32 hex digits)."""
        if isinstance(value, UUID):
            return str(value)
        h = str(value)
        if len(h) == 32:  # what UUID(hex=...) would print, without building one
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".lower()
        return str(UUID(h))

    def _exec(self, c: Any, text: str, params: Sequence[Any] = ()) -> Any:
        c.execute(self._sql(text.replace("{s}", self.schema_prefix)), tuple(params))
        return c

    def _save_tracking(self, c: Any, tracking: Tracking) -> None:
        raise NotImplementedError

    # -- writing -----------------------------------------------------------------------------

    def commit(
        self,
        puts: Iterable[Put],
        streams: Iterable[tuple[str, str, int]],
        tracking: Tracking | None,
        deletes: Iterable[tuple[str, str]] = (),
        sheet_rows: Iterable[SheetRow] = (),
    ) -> None:
        """Write documents, stream index rows, sheet rows and the tracking position in one
        transaction."""
        rows = [
            (
                p.view,
                p.key,
                p.employee,
                p.agency,
                p.period,
                json.dumps(p.doc, separators=(",", ":"), ensure_ascii=False),
            )
            for p in puts
        ]
        index = list(streams)
        appended = [
            (r.subject, r.seq, r.item, json.dumps(r.row, separators=(",", ":"), ensure_ascii=False))
            for r in sheet_rows
        ]
        with self._cursor(commit=True) as c:
            for view, key in deletes:
                self._exec(
                    c, "DELETE FROM {s}kpi_view_docs WHERE view = ? AND key = ?", (view, key)
                )
            if rows:
                c.executemany(
                    self._sql(
                        "INSERT INTO {s}kpi_view_docs (view, key, employee, agency, period, doc)"
                        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (view, key) DO UPDATE SET"
                        " employee = excluded.employee, agency = excluded.agency,"
                        " period = excluded.period, doc = excluded.doc".replace(
                            "{s}", self.schema_prefix
                        )
                    ),
                    rows,
                )
            if index:
                c.executemany(
                    self._sql(
                        "INSERT INTO {s}kpi_view_streams (subject, stream, seq) VALUES (?, ?, ?)"
                        " ON CONFLICT (subject, stream) DO NOTHING".replace(
                            "{s}", self.schema_prefix
                        )
                    ),
                    index,
                )
            if appended:
                c.executemany(
                    self._sql(
                        "INSERT INTO {s}kpi_view_sheet_rows (subject, seq, item, row)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (subject, seq) DO NOTHING".replace(
                            "{s}", self.schema_prefix
                        )
                    ),
                    appended,
                )
            if tracking is not None:
                self._save_tracking(c, tracking)

    def clear(self) -> None:
        """Forget every read model and the tracking position (before a rebuild)."""
        with self._cursor(commit=True) as c:
            self._exec(c, "DELETE FROM {s}kpi_view_docs")
            self._exec(c, "DELETE FROM {s}kpi_view_streams")
            self._exec(c, "DELETE FROM {s}kpi_view_sheet_rows")
            self._delete_tracking(c)

    def _delete_tracking(self, c: Any) -> None:
        raise NotImplementedError

    # -- reading the views -------------------------------------------------------------------

    def docs(self, view: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(keys)):
                marks = ",".join("?" * len(chunk))
                self._exec(
                    c,
                    f"SELECT key, doc FROM {{s}}kpi_view_docs WHERE view = ? AND key IN ({marks})",
                    (view, *chunk),
                )
                out.update({r["key"]: json.loads(r["doc"]) for r in c.fetchall()})
        return out

    def doc(self, view: str, key: str) -> dict[str, Any] | None:
        return self.docs(view, [key]).get(key)

    def find(
        self,
        view: str,
        *,
        employee: str | None = None,
        agency: str | None = None,
        period: str | None = None,
    ) -> list[dict[str, Any]]:
        """Documents of ``view`` matching the given columns, ordered by key."""
        return [json.loads(r["doc"]) for r in self._select("doc", view, employee, agency, period)]

    def keys(
        self,
        view: str,
        *,
        employee: str | None = None,
        agency: str | None = None,
        period: str | None = None,
    ) -> list[str]:
        """The keys of those documents (nothing else is read)."""
        return [r["key"] for r in self._select("key", view, employee, agency, period)]

    def page(
        self,
        view: str,
        *,
        after: str | None = None,
        limit: int = 100,
        employee: str | None = None,
        agency: str | None = None,
        period: str | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` (key, document) of ``view`` with keys after ``after``, by key."""
        where, params = ["view = ?"], [view]
        for name, value in (("employee", employee), ("agency", agency), ("period", period)):
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        if after is not None:
            where.append("key > ?")
            params.append(after)
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                f"SELECT key, doc FROM {{s}}kpi_view_docs WHERE {' AND '.join(where)}"
                " ORDER BY key LIMIT ?",
                [*params, limit],
            )
            return [(r["key"], json.loads(r["doc"])) for r in c.fetchall()]

    def _select(
        self, column: str, view: str, employee: str | None, agency: str | None, period: str | None
    ) -> list[Any]:
        where, params = ["view = ?"], [view]
        for name, value in (("employee", employee), ("agency", agency), ("period", period)):
            if value is not None:
                where.append(f"{name} = ?")
                params.append(value)
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                f"SELECT {column} FROM {{s}}kpi_view_docs WHERE {' AND '.join(where)} ORDER BY key",
                params,
            )
            return list(c.fetchall())

    def sheet_rows(self, subject: str) -> list[tuple[str | None, list[Any]]]:
        """The stored rows of ``subject``'s sheet, in log order: (item, row)."""
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                "SELECT item, row FROM {s}kpi_view_sheet_rows WHERE subject = ? ORDER BY seq",
                (subject,),
            )
            return [(r["item"], json.loads(r["row"])) for r in c.fetchall()]

    def sheet_subjects(self, employee: str | None = None) -> list[str]:
        """The subjects (``employee/period``) that have a sheet; only ``employee``'s if given."""
        sql = "SELECT DISTINCT subject FROM {s}kpi_view_sheet_rows"
        params: tuple[str, ...] = ()
        if employee is not None:  # a range over the primary key: employee/ .. employee0
            sql += " WHERE subject > ? AND subject < ?"
            params = (employee + "/", employee + "0")
        with self._cursor(commit=False) as c:
            self._exec(c, sql + " ORDER BY subject", params)
            return [r["subject"] for r in c.fetchall()]

    def subjects_of_streams(self, streams: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(streams)):
                marks = ",".join("?" * len(chunk))
                self._exec(
                    c,
                    f"SELECT subject, stream FROM {{s}}kpi_view_streams WHERE stream IN ({marks})",
                    chunk,
                )
                out.update({r["stream"]: r["subject"] for r in c.fetchall()})
        return out

    def streams_of(self, subjects: Sequence[str], upto: int | None = None) -> list[str]:
        """Streams indexed under ``subjects`` whose first fact is at or before ``upto``."""
        out: list[str] = []
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(subjects)):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT stream FROM {{s}}kpi_view_streams WHERE subject IN ({marks})"
                params: list[Any] = list(chunk)
                if upto is not None:
                    sql += " AND seq <= ?"
                    params.append(upto)
                self._exec(c, sql, params)
                out.extend(r["stream"] for r in c.fetchall())
        return out

    # -- reading the log ---------------------------------------------------------------------

    def stream_facts(self, streams: Sequence[str], upto: int | None = None) -> list[Fact]:
        """The facts of ``streams`` at log positions up to ``upto`` (all if None), in log order."""
        facts: list[Fact] = []
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(dict.fromkeys(streams))):
                marks = ",".join("?" * len(chunk))
                sql = (
                    f"SELECT l.seq AS seq, e.originator_id AS stream, e.state AS state"
                    f" FROM {{s}}{self.events_table} e JOIN {{s}}log_entries l"
                    f" ON l.notification_id = e.{self.event_id_column}"
                    f" WHERE e.originator_id IN ({marks})"
                )
                params = [self._stream_param(s) for s in chunk]
                if upto is not None:
                    sql += " AND l.seq <= ?"
                    params.append(upto)
                self._exec(c, sql, params)
                facts.extend(
                    decode(int(r["seq"]), self._stream_text(r["stream"]), bytes(r["state"]))
                    for r in c.fetchall()
                )
        facts.sort(key=lambda f: f.seq)
        return facts

    def log_page(self, after: int, limit: int) -> list[LogRow]:
        """Up to ``limit`` entries with notification ids above ``after``, in log order."""
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                f"SELECT l.seq AS seq, l.notification_id AS nid, e.originator_id AS stream,"
                f" e.state AS state FROM {{s}}log_entries l JOIN {{s}}{self.events_table} e"
                f" ON e.{self.event_id_column} = l.notification_id"
                f" WHERE l.notification_id > ? ORDER BY l.notification_id LIMIT ?",
                (after, limit),
            )
            return [
                LogRow(
                    int(r["seq"]), int(r["nid"]), self._stream_text(r["stream"]), bytes(r["state"])
                )
                for r in c.fetchall()
            ]

    def head(self) -> tuple[int, int]:
        """(last seq, its notification id); (-1, 0) for an empty log."""
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                "SELECT seq, notification_id AS nid FROM {s}log_entries ORDER BY seq DESC LIMIT 1",
            )
            row = c.fetchone()
            return (-1, 0) if row is None else (int(row["seq"]), int(row["nid"]))

    def seq_for_notification(self, nid: int) -> int:
        """The last log position at or before notification id ``nid`` (-1: none)."""
        with self._cursor(commit=False) as c:
            self._exec(
                c,
                "SELECT seq FROM {s}log_entries WHERE notification_id <= ?"
                " ORDER BY notification_id DESC LIMIT 1",
                (nid,),
            )
            row = c.fetchone()
            return -1 if row is None else int(row["seq"])

    def seqs_for(self, ids: Sequence[int]) -> dict[int, int]:
        """Log positions of notification ids."""
        out: dict[int, int] = {}
        with self._cursor(commit=False) as c:
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                self._exec(
                    c,
                    f"SELECT notification_id AS nid, seq FROM {{s}}log_entries"
                    f" WHERE notification_id IN ({marks})",
                    chunk,
                )
                out.update({int(r["nid"]): int(r["seq"]) for r in c.fetchall()})
        return out

    def recorded_at(self, seq: int) -> str | None:
        with self._cursor(commit=False) as c:
            self._exec(c, "SELECT recorded_at FROM {s}log_entries WHERE seq = ?", (seq,))
            row = c.fetchone()
            return None if row is None else str(row["recorded_at"])


class SQLiteEvaluationView(SQLiteTrackingRecorder, _ViewSQL):
    """The evaluation read models in the ledger's SQLite file."""

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *(t.replace("{s}", "") for t in _TABLES),
        ]

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def _stream_param(self, stream: str) -> Any:
        return UUID(stream).hex

    def _save_tracking(self, c: Any, tracking: Tracking) -> None:
        self._insert_tracking(c, tracking)

    def _delete_tracking(self, c: Any) -> None:
        c.execute("DELETE FROM tracking WHERE application_name = ?", (APP_NAME,))


class PostgresEvaluationView(PostgresTrackingRecorder, _ViewSQL):
    """The evaluation read models in the ledger's PostgreSQL schema."""

    events_table = "kpiledger_events"
    event_id_column = "notification_id"

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.schema_prefix = f'"{datastore.schema}".' if datastore.schema else ""
        from psycopg.sql import SQL

        for statement in _TABLES:
            self.sql_create_statements.append(SQL(statement.replace("{s}", self.schema_prefix)))  # type: ignore[arg-type]

    def _create_table(self, curs: Any) -> None:
        # Processes starting together (two services on one database, workers) would race in
        # CREATE TABLE IF NOT EXISTS, which is not safe against a concurrent one: one at a time.
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
        super()._create_table(curs)

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as c:
            yield c

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _stream_param(self, stream: str) -> Any:
        return UUID(stream)

    def _save_tracking(self, c: Any, tracking: Tracking) -> None:
        self._insert_tracking(c, tracking)

    def _delete_tracking(self, c: Any) -> None:
        from psycopg.sql import SQL, Identifier

        c.execute(
            SQL("DELETE FROM {0}.{1} WHERE application_name = %s").format(
                Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
            ),
            (APP_NAME,),
        )
