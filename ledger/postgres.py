"""The sealed log on PostgreSQL (production).

``SealedPostgresRecorder`` replaces the library's insert path with one transaction that:
takes the events table's EXCLUSIVE lock (serialising writers, so commit order is insert order),
NOTIFYs subscribers, inserts the events, reads the log size, then inserts the ``log_entries`` rows
(gap-free ``seq``) and the Merkle nodes the batch completes. Any error — including a Python
error while sealing — is raised *inside* the transaction block, so nothing commits: the library's
own method swallows errors until after its transaction, which would commit events unsealed.

A conflict on the events' primary key (optimistic concurrency) burns a notification id but
never a sequence number, because ``seq`` is computed from the log inside the transaction.
A unique violation on ``log_entries.nonce`` or ``log_entries.idem`` becomes
``ReplayedEnvelopeError`` or ``DuplicateIdempotencyKeyError``. A schema created before
``log_entries.idem`` existed gets the column (and its unique index) at ``create_table``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from psycopg.sql import SQL, Composed, Identifier

from ledger.locks import SCHEMA_LOCK_ID
from ledger.sealer import EntryRow, SealedBatch, Sealer
from ledger.store import (
    DuplicateIdempotencyKeyError,
    ReplayedEnvelopeError,
    SealedLog,
    StoredCheckpoint,
)
from signing.merkle import CompactRange, perfect_subtrees


class SealedPostgresRecorder(PostgresApplicationRecorder, SealedLog):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.sealer = Sealer()
        schema = Identifier(self.datastore.schema)
        self.sql_create_statements.extend(
            SQL(text).format(schema=schema)
            for text in (
                "CREATE TABLE IF NOT EXISTS {schema}.log_entries ("
                " seq bigint PRIMARY KEY,"
                " notification_id bigint NOT NULL UNIQUE,"
                " recorded_at text NOT NULL,"
                " leaf_hash bytea NOT NULL,"
                " nonce text CONSTRAINT log_entries_nonce_key UNIQUE,"
                " idem text CONSTRAINT log_entries_idem_key UNIQUE)",
                "CREATE TABLE IF NOT EXISTS {schema}.log_nodes ("
                " level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL,"
                " PRIMARY KEY (level, idx))",
                "CREATE TABLE IF NOT EXISTS {schema}.log_checkpoints ("
                " size bigint PRIMARY KEY, root bytea NOT NULL, note text NOT NULL,"
                " signed_at text NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {schema}.log_meta ("
                " key text PRIMARY KEY, value text NOT NULL)",
            )
        )
        self._sql_head = SQL(
            "SELECT COALESCE(MAX(seq) + 1, 0) AS head FROM {schema}.log_entries"
        ).format(schema=schema)
        self._sql_insert_entries = SQL(
            "INSERT INTO {schema}.log_entries"
            " (seq, notification_id, recorded_at, leaf_hash, nonce, idem)"
            " SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::bytea[],"
            " %b::text[], %b::text[])"
        ).format(schema=schema)
        # The events as four binary arrays rather than the library's array of a composite type,
        # which psycopg dumps as text (escaping every event's bytes with a regular expression):
        # about a fifth of the intake's CPU per fact (docs/performance.md §6).
        self._sql_insert_event_columns = SQL(
            "INSERT INTO {schema}.{table} AS t (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
            " RETURNING notification_id"
        ).format(
            schema=schema,
            table=Identifier(self.events_table_name),
            id_type=Identifier(self.datastore.originator_id_type),
        )
        self._sql_insert_nodes = SQL(
            "INSERT INTO {schema}.log_nodes (level, idx, hash)"
            " SELECT * FROM unnest(%b::smallint[], %b::bigint[], %b::bytea[])"
        ).format(schema=schema)
        self._sql_select_leaves = SQL(
            "SELECT seq, leaf_hash FROM {schema}.log_entries WHERE seq = ANY(%s::bigint[])"
        ).format(schema=schema)
        self._sql_select_nodes = SQL(
            "SELECT n.level, n.idx, n.hash FROM {schema}.log_nodes n"
            " JOIN unnest(%s::smallint[], %s::bigint[]) AS c(level, idx)"
            " ON n.level = c.level AND n.idx = c.idx"
        ).format(schema=schema)
        self._sql_select_rows = SQL(
            "SELECT l.seq, l.notification_id, l.recorded_at, l.leaf_hash,"
            " e.originator_id, e.originator_version, e.topic, e.state"
            " FROM {schema}.log_entries l LEFT JOIN {schema}.{events} e"
            " ON e.notification_id = l.notification_id"
            " WHERE l.seq >= %s AND l.seq < %s ORDER BY l.seq"
        ).format(schema=schema, events=Identifier(self.events_table_name))
        self._schema = schema

    def _create_table(self, curs: psycopg.Cursor[Any]) -> None:
        # Processes starting together would otherwise run the library's CREATE OR REPLACE
        # FUNCTION statements at once ("tuple concurrently updated"): one at a time.
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_ID,))
        super()._create_table(curs)
        # Schemas created before the idempotency column: add it, in the same transaction. Only
        # then, so that opening an up-to-date ledger takes no lock on log_entries.
        curs.execute(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'log_entries' AND column_name = 'idem'",
            (self.datastore.schema,),
        )
        if curs.fetchone() is None:
            curs.execute(
                SQL("ALTER TABLE {schema}.log_entries ADD COLUMN IF NOT EXISTS idem text").format(
                    schema=self._schema
                )
            )
            curs.execute(
                SQL(
                    "CREATE UNIQUE INDEX IF NOT EXISTS log_entries_idem_key"
                    " ON {schema}.log_entries (idem)"
                ).format(schema=self._schema)
            )

    # -- write path ----------------------------------------------------------------------
    # No automatic retry (the library's method retries on connection errors): a connection
    # lost at COMMIT leaves the outcome unknown, and trying the batch again would meet its
    # own nonces and report a replay. The service settles the outcome instead
    # (``settled_nonce_seqs``) and tries again only what it knows was not stored.
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        notification_ids: Sequence[int] | None = None
        batch: SealedBatch | None = None
        error: Exception | None = None
        with self.datastore.get_connection() as conn, conn.transaction():
            # An error leaves the pipeline block as an exception (a pipeline left quietly
            # after a failed statement raises its own "pipeline aborted" on exit, hiding the
            # cause) and is re-raised inside the transaction, which then rolls back.
            try:
                with conn.pipeline() as pipeline:
                    with conn.cursor() as curs:
                        self._insert_events(curs, stored_events, **kwargs)
                    if stored_events:
                        notification_ids, batch = self._insert_and_seal(
                            conn, pipeline, stored_events, **kwargs
                        )
            except Exception as exc:
                error = exc
            if error is not None:
                raise error
        if batch is not None:
            self.sealer.committed(batch)
        return notification_ids

    def _insert_stored_events(
        self, curs: psycopg.Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """What the library's does (lock the table, notify, insert), with binary arrays."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._sql_insert_event_columns,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )

    def _insert_and_seal(
        self,
        conn: psycopg.Connection[Any],
        pipeline: psycopg.Pipeline,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> tuple[Sequence[int], SealedBatch]:
        with conn.cursor() as events_curs, conn.cursor() as head_curs:
            self._insert_stored_events(events_curs, stored_events, **kwargs)  # lock, notify, insert
            head_curs.execute(self._sql_head, prepare=True)
            pipeline.sync()
            notification_ids = self._fetch_ids_after_insert_events(events_curs, stored_events)
            assert notification_ids is not None
            row = head_curs.fetchone()
            assert row is not None
            head = int(row["head"])
            self.check_head(head)
        with conn.cursor() as curs:
            batch = self.sealer.seal(
                head, lambda size: self._load_frontier(curs, size), stored_events, notification_ids
            )
            entries = batch.entry_rows
            try:
                curs.execute(
                    self._sql_insert_entries,
                    (
                        [r[0] for r in entries],
                        [r[1] for r in entries],
                        [r[2] for r in entries],
                        [r[3] for r in entries],
                        [r[4] for r in entries],
                        [r[5] for r in entries],
                    ),
                    prepare=True,
                )
                if batch.node_rows:
                    nodes = batch.node_rows
                    curs.execute(
                        self._sql_insert_nodes,
                        ([n[0] for n in nodes], [n[1] for n in nodes], [n[2] for n in nodes]),
                        prepare=True,
                    )
                # Constraint violations on log_entries surface here, or already at the next
                # statement when the pipeline fetches results early.
                pipeline.sync()
            except psycopg.errors.UniqueViolation as exc:
                refusal = self._refusal(exc, entries)
                if refusal is None:
                    raise
                raise refusal from exc
        return notification_ids, batch

    @staticmethod
    def _refusal(
        error: psycopg.errors.UniqueViolation, rows: Sequence[EntryRow]
    ) -> ReplayedEnvelopeError | None:
        """The violation as a replayed nonce or a duplicate idempotency token, if it is one."""
        constraint = error.diag.constraint_name
        if constraint not in ("log_entries_nonce_key", "log_entries_idem_key"):
            return None
        detail = error.diag.message_detail or ""  # Key (column)=(value) already exists.
        value = detail.split("=(", 1)[-1].split(")", 1)[0] if "=(" in detail else "?"
        if constraint == "log_entries_nonce_key":
            return ReplayedEnvelopeError(value)
        # The refused envelope: the batch's last row with that token (an earlier row with it,
        # if any, is the one that would have been accepted).
        nonce = next((r[4] for r in reversed(rows) if r[5] == value), None)
        return DuplicateIdempotencyKeyError(value, nonce)

    def _load_frontier(self, curs: psycopg.Cursor[Any], size: int) -> CompactRange:
        coords = perfect_subtrees(0, size)
        nodes = self._nodes_with(curs, coords)
        return CompactRange(size, [nodes[c] for c in coords])

    # -- read hooks ----------------------------------------------------------------------
    def _query(self, statement: Composed | SQL, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return list(curs.fetchall())

    def _sql_log_size(self) -> int:
        return int(self._query(self._sql_head)[0]["head"])

    def _sql_rows(self, start: int, stop: int) -> list[Sequence[Any]]:
        return [tuple(r.values()) for r in self._query(self._sql_select_rows, (start, stop))]

    def _nodes_with(
        self, curs: psycopg.Cursor[Any], coords: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        leaves = [i for level, i in coords if level == 0]
        inner = [(level, i) for level, i in coords if level > 0]
        if leaves:
            curs.execute(self._sql_select_leaves, (leaves,), prepare=True)
            out.update({(0, int(r["seq"])): bytes(r["leaf_hash"]) for r in curs.fetchall()})
        if inner:
            curs.execute(
                self._sql_select_nodes,
                ([c[0] for c in inner], [c[1] for c in inner]),
                prepare=True,
            )
            out.update(
                {(int(r["level"]), int(r["idx"])): bytes(r["hash"]) for r in curs.fetchall()}
            )
        return out

    def _sql_nodes(self, coords: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return self._nodes_with(curs, coords)

    def _sql_checkpoints(self, newest_first: bool, limit: int | None) -> list[Sequence[Any]]:
        statement = SQL(
            "SELECT size, root, note, signed_at FROM {schema}.log_checkpoints ORDER BY size "
            + ("DESC" if newest_first else "ASC")
            + ("" if limit is None else f" LIMIT {int(limit)}")
        ).format(schema=self._schema)
        return [tuple(r.values()) for r in self._query(statement)]

    def _sql_insert_checkpoint(self, cp: StoredCheckpoint) -> None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {schema}.log_checkpoints (size, root, note, signed_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (size) DO NOTHING"
                ).format(schema=self._schema),
                (cp.size, cp.root, cp.note, cp.signed_at),
            )

    def _sql_meta(self, key: str) -> str | None:
        rows = self._query(
            SQL("SELECT value FROM {schema}.log_meta WHERE key = %s").format(schema=self._schema),
            (key,),
        )
        return str(rows[0]["value"]) if rows else None

    def _sql_set_meta(self, key: str, value: str) -> None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {schema}.log_meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ).format(schema=self._schema),
                (key, value),
            )

    def _sql_nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        rows = self._query(
            SQL("SELECT nonce, seq FROM {schema}.log_entries WHERE nonce = ANY(%s::text[])").format(
                schema=self._schema
            ),
            (list(nonces),),
        )
        return {str(r["nonce"]): int(r["seq"]) for r in rows}

    def settled_nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        """``nonce_seqs`` once no write is in flight: the events table is locked in SHARE
        mode first, which waits for a writer's EXCLUSIVE lock, so a transaction whose
        commit was cut off mid-way has ended, one way or the other, before the log is read.
        What a writer whose connection failed asks to learn whether its batch was stored."""
        if not nonces:
            return {}
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute("SET LOCAL lock_timeout = '30s'")
            curs.execute(
                SQL("LOCK TABLE {schema}.{table} IN SHARE MODE").format(
                    schema=self._schema, table=Identifier(self.events_table_name)
                )
            )
            curs.execute(
                SQL(
                    "SELECT nonce, seq FROM {schema}.log_entries WHERE nonce = ANY(%s::text[])"
                ).format(schema=self._schema),
                (list(nonces),),
            )
            return {str(r["nonce"]): int(r["seq"]) for r in curs.fetchall()}

    def _sql_idempotency_seqs(self, tokens: Sequence[str]) -> dict[str, int]:
        rows = self._query(
            SQL("SELECT idem, seq FROM {schema}.log_entries WHERE idem = ANY(%s::text[])").format(
                schema=self._schema
            ),
            (list(tokens),),
        )
        return {str(r["idem"]): int(r["seq"]) for r in rows}

    def _sql_seqs_for_notifications(self, ids: Sequence[int]) -> dict[int, int]:
        rows = self._query(
            SQL(
                "SELECT notification_id, seq FROM {schema}.log_entries"
                " WHERE notification_id = ANY(%s::bigint[])"
            ).format(schema=self._schema),
            (list(ids),),
        )
        return {int(r["notification_id"]): int(r["seq"]) for r in rows}

    def _sql_stream_before(self, stream: UUID, before: int) -> list[Sequence[Any]]:
        statement = SQL(
            "SELECT e.originator_version, e.topic, e.state FROM {schema}.{events} e"
            " JOIN {schema}.log_entries l ON l.notification_id = e.notification_id"
            " WHERE e.originator_id = %s AND l.seq < %s ORDER BY e.originator_version"
        ).format(schema=self._schema, events=Identifier(self.events_table_name))
        return [tuple(r.values()) for r in self._query(statement, (stream, before))]

    def _sql_topic_entries(self, topics: Sequence[str], before: int) -> list[Sequence[Any]]:
        statement = SQL(
            "SELECT l.seq, e.state FROM {schema}.{events} e"
            " JOIN {schema}.log_entries l ON l.notification_id = e.notification_id"
            " WHERE e.topic = ANY(%s::text[]) AND l.seq < %s ORDER BY l.seq"
        ).format(schema=self._schema, events=Identifier(self.events_table_name))
        return [tuple(r.values()) for r in self._query(statement, (list(topics), before))]


class SealedPostgresFactory(PostgresFactory):
    """Infrastructure factory whose application recorder seals the log."""

    application_recorder_class = SealedPostgresRecorder
