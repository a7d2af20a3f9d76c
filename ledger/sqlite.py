"""The sealed log on SQLite (the embedded default).

``SealedSQLiteRecorder`` is the library's ``SQLiteApplicationRecorder`` plus sealing: inside the
transaction that inserts the events (SQLite holds the database write lock from the first
INSERT to COMMIT), it reads the log size, appends one ``log_entries`` row per event and the
Merkle nodes the batch completes. A refused write (version conflict, replayed nonce, duplicate
idempotency token) rolls everything back, so sequence numbers never have gaps even where rowids
do. A file created before ``log_entries.idem`` existed gets the column when it is opened.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)

from ledger.sealer import SealedBatch, Sealer
from ledger.store import (
    DuplicateIdempotencyKeyError,
    ReplayedEnvelopeError,
    SealedLog,
    StoredCheckpoint,
)
from signing.merkle import CompactRange, perfect_subtrees

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS log_entries ("
    " seq INTEGER PRIMARY KEY,"
    " notification_id INTEGER NOT NULL UNIQUE,"
    " recorded_at TEXT NOT NULL,"
    " leaf_hash BLOB NOT NULL,"
    " nonce TEXT UNIQUE,"
    " idem TEXT UNIQUE)",
    "CREATE TABLE IF NOT EXISTS log_nodes ("
    " level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (level, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS log_checkpoints ("
    " size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
]


class SealedSQLiteRecorder(SQLiteApplicationRecorder, SealedLog):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self.sealer = Sealer()
        self._local = threading.local()  # the batch sealed by this thread's open transaction

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *_SCHEMA]

    def _create_table(self, c: SQLiteCursor) -> None:
        super()._create_table(c)
        # Files created before the idempotency column: add it (same transaction as the rest).
        c.execute("PRAGMA table_info(log_entries)")
        if "idem" not in {str(row[1]) for row in c.fetchall()}:
            c.execute("ALTER TABLE log_entries ADD COLUMN idem TEXT")
            c.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS log_entries_idem_key ON log_entries (idem)"
            )

    # -- write path ----------------------------------------------------------------------
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._local.pending = None
        ids = super().insert_events(stored_events, **kwargs)
        batch, self._local.pending = self._local.pending, None
        if batch is not None:
            self.sealer.committed(batch)
        return ids

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if not stored_events:
            return ids
        assert ids is not None
        c.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM log_entries")
        head = int(c.fetchone()[0])
        self.check_head(head)
        batch = self.sealer.seal(head, self._frontier_in(c), stored_events, ids)
        try:
            c.executemany(
                "INSERT INTO log_entries"
                " (seq, notification_id, recorded_at, leaf_hash, nonce, idem)"
                " VALUES (?,?,?,?,?,?)",
                batch.entry_rows,
            )
        except sqlite3.IntegrityError as exc:
            refusal = self._refusal(c, batch, str(exc))
            if refusal is not None:
                raise refusal from exc
            raise
        c.executemany("INSERT INTO log_nodes (level, idx, hash) VALUES (?,?,?)", batch.node_rows)
        self._local.pending = batch
        return ids

    @staticmethod
    def _refusal(c: SQLiteCursor, batch: SealedBatch, message: str) -> ReplayedEnvelopeError | None:
        """Why the batch's ``log_entries`` insert hit a unique constraint, if it was a nonce or
        an idempotency token used before (in the log, or earlier in the batch).

        ``executemany`` stops at the first failing row, and the rows before it are already in
        this transaction: so only positions before the batch count as "in the log", and the
        first row of the batch that collides is the one refused.
        """
        rows = batch.entry_rows
        logged_nonces = _logged(c, "nonce", [r[4] for r in rows if r[4] is not None], batch.start)
        logged_tokens = _logged(c, "idem", [r[5] for r in rows if r[5] is not None], batch.start)
        token_first = "log_entries.idem" in message  # which constraint SQLite named
        nonces: set[str] = set()
        tokens: set[str] = set()
        for row in rows:
            nonce, token = row[4], row[5]
            nonce_used = nonce is not None and (nonce in nonces or nonce in logged_nonces)
            token_used = token is not None and (token in tokens or token in logged_tokens)
            if token is not None and token_used and (token_first or not nonce_used):
                return DuplicateIdempotencyKeyError(token, nonce)
            if nonce is not None and nonce_used:
                return ReplayedEnvelopeError(nonce)
            if nonce is not None:
                nonces.add(nonce)
            if token is not None:
                tokens.add(token)
        return None

    def _frontier_in(self, c: SQLiteCursor) -> Callable[[int], CompactRange]:
        def load(size: int) -> CompactRange:
            coords = perfect_subtrees(0, size)
            nodes = self._nodes_with(c, coords)
            return CompactRange(size, [nodes[x] for x in coords])

        return load

    # -- read hooks ----------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return list(c.fetchall())

    def _sql_log_size(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq) + 1, 0) FROM log_entries")[0][0])

    def _sql_rows(self, start: int, stop: int) -> list[Sequence[Any]]:
        return self._query(
            "SELECT l.seq, l.notification_id, l.recorded_at, l.leaf_hash,"
            f" e.originator_id, e.originator_version, e.topic, e.state"
            f" FROM log_entries l LEFT JOIN {self.events_table_name} e"
            " ON e.rowid = l.notification_id WHERE l.seq >= ? AND l.seq < ? ORDER BY l.seq",
            (start, stop),
        )

    def _nodes_with(
        self, c: SQLiteCursor, coords: Collection[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        leaves = [i for level, i in coords if level == 0]
        inner = [(level, i) for level, i in coords if level > 0]
        for chunk in _chunks(leaves, 500):
            marks = ",".join("?" * len(chunk))
            c.execute(f"SELECT seq, leaf_hash FROM log_entries WHERE seq IN ({marks})", chunk)
            out.update({(0, int(r[0])): bytes(r[1]) for r in c.fetchall()})
        for chunk in _chunks(inner, 400):
            where = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
            c.execute(
                f"SELECT level, idx, hash FROM log_nodes WHERE {where}",
                [v for pair in chunk for v in pair],
            )
            out.update({(int(r[0]), int(r[1])): bytes(r[2]) for r in c.fetchall()})
        return out

    def _sql_nodes(self, coords: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        with self.datastore.transaction(commit=False) as c:
            return self._nodes_with(c, coords)

    def _sql_checkpoints(self, newest_first: bool, limit: int | None) -> list[Sequence[Any]]:
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT size, root, note, signed_at FROM log_checkpoints ORDER BY size {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql)

    def _sql_insert_checkpoint(self, cp: StoredCheckpoint) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT OR IGNORE INTO log_checkpoints (size, root, note, signed_at)"
                " VALUES (?,?,?,?)",
                (cp.size, cp.root, cp.note, cp.signed_at),
            )

    def _sql_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM log_meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def _sql_set_meta(self, key: str, value: str) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT INTO log_meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def _sql_nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(list(nonces), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT nonce, seq FROM log_entries WHERE nonce IN ({marks})", chunk
            )
            out.update({str(r[0]): int(r[1]) for r in rows})
        return out

    def _sql_idempotency_seqs(self, tokens: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(list(tokens), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._query(f"SELECT idem, seq FROM log_entries WHERE idem IN ({marks})", chunk)
            out.update({str(r[0]): int(r[1]) for r in rows})
        return out

    def _sql_seqs_for_notifications(self, ids: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for chunk in _chunks(list(ids), 500):
            rows = self._query(
                "SELECT notification_id, seq FROM log_entries"
                f" WHERE notification_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update({int(r[0]): int(r[1]) for r in rows})
        return out

    def _sql_stream_before(self, stream: UUID, before: int) -> list[Sequence[Any]]:
        return self._query(
            f"SELECT e.originator_version, e.topic, e.state FROM {self.events_table_name} e"
            " JOIN log_entries l ON l.notification_id = e.rowid"
            " WHERE e.originator_id = ? AND l.seq < ? ORDER BY e.originator_version",
            (stream.hex, before),
        )

    def _sql_topic_entries(self, topics: Sequence[str], before: int) -> list[Sequence[Any]]:
        marks = ",".join("?" * len(topics))
        return self._query(
            f"SELECT l.seq, e.state FROM {self.events_table_name} e"
            " JOIN log_entries l ON l.notification_id = e.rowid"
            f" WHERE e.topic IN ({marks}) AND l.seq < ? ORDER BY l.seq",
            (*topics, before),
        )


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _logged(c: SQLiteCursor, column: str, values: list[str], before: int) -> set[str]:
    """Those of ``values`` that ``log_entries.<column>`` holds at a position before ``before``."""
    assert column in ("nonce", "idem")
    found: set[str] = set()
    for chunk in _chunks(values, 500):
        marks = ",".join("?" * len(chunk))
        c.execute(
            f"SELECT {column} FROM log_entries WHERE seq < ? AND {column} IN ({marks})",
            [before, *chunk],
        )
        found.update(str(r[0]) for r in c.fetchall())
    return found


class SealedSQLiteFactory(SQLiteFactory):
    """Infrastructure factory whose application recorder seals the log."""

    application_recorder_class = SealedSQLiteRecorder
