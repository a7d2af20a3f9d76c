"""Sealing: turning a batch of stored events into log rows inside their own transaction.

Both recorders (SQLite, PostgreSQL) call ``Sealer.seal`` after inserting the events and while
holding the write lock, with the log's current size read in that same transaction. The sealer
returns the rows to insert — one ``log_entries`` row per event (gap-free ``seq``, the time
recorded, the leaf hash, the envelope nonce, the idempotency token) and the internal Merkle
nodes the batch completes — and a new frontier that becomes the cached one only after the
transaction commits.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from signing.entry import encode_entry_parts, json_string
from signing.merkle import CompactRange, leaf_hash


@dataclass(frozen=True)
class SealedStoredEvent(StoredEvent):
    """A stored event that carries its envelope's nonce, for replay refusal in the database, and
    its idempotency token (``ledger.store.idempotency_token``, None for a fact without an
    idempotency key), for refusing a duplicate submission in the database."""

    nonce: str | None = None
    idem: str | None = None


# One log_entries row: (seq, notification_id, recorded_at, leaf_hash, nonce, idem).
EntryRow = tuple[int, int, str, bytes, str | None, str | None]


def real_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_recorded(now: dt.datetime) -> str:
    """A ``recorded_at`` value: UTC, microseconds, ``Z``."""
    now = now.astimezone(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"


def recorded_now() -> str:
    return format_recorded(real_clock())


@dataclass
class SealedBatch:
    start: int
    entry_rows: list[EntryRow] = field(default_factory=list)
    node_rows: list[tuple[int, int, bytes]] = field(default_factory=list)
    frontier: CompactRange | None = None


class Sealer:
    """Builds log rows for a batch; caches the Merkle frontier between batches.

    ``clock`` gives the time each batch is recorded at: the real clock, always, except for
    ``kpi-ledger demo``, which sets its simulated calendar while it seeds (``api/demo.py``) so
    that the recorded times follow the story; it must never go backwards."""

    def __init__(self, clock: Callable[[], dt.datetime] = real_clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._frontier: CompactRange | None = None
        self._topics: dict[str, str] = {}  # topic -> its JSON string form
        # Called with each batch once its transaction has committed (ledger/proof_cache.py
        # keeps the new nodes); a listener must not raise.
        self.on_commit: list[Callable[[SealedBatch], None]] = []

    def seal(
        self,
        head: int,
        load_frontier: Callable[[int], CompactRange],
        stored_events: Sequence[StoredEvent],
        notification_ids: Sequence[int],
    ) -> SealedBatch:
        with self._lock:
            cached = self._frontier
        frontier = (
            cached.copy() if cached is not None and cached.size == head else load_frontier(head)
        )
        recorded_at = format_recorded(self.clock())
        recorded_json = json_string(recorded_at)
        topics = self._topics
        batch = SealedBatch(start=head)
        entry_rows, node_rows, append = batch.entry_rows, batch.node_rows, frontier.append
        seq = head
        for stored, notification_id in zip(stored_events, notification_ids, strict=True):
            topic_json = topics.get(stored.topic)
            if topic_json is None:
                topic_json = topics[stored.topic] = json_string(stored.topic)
            originator = stored.originator_id
            stream_json = (
                f'"{originator}"' if isinstance(originator, UUID) else json_string(str(originator))
            )
            leaf = leaf_hash(
                encode_entry_parts(
                    seq,
                    stream_json,
                    stored.originator_version,
                    topic_json,
                    recorded_json,
                    stored.state,
                )
            )
            entry_rows.append(
                (
                    seq,
                    notification_id,
                    recorded_at,
                    leaf,
                    getattr(stored, "nonce", None),
                    getattr(stored, "idem", None),
                )
            )
            node_rows.extend(append(leaf))
            seq += 1
        batch.frontier = frontier
        return batch

    def committed(self, batch: SealedBatch) -> None:
        """Adopt the batch's frontier once its transaction has committed."""
        with self._lock:
            if batch.frontier is not None and (
                self._frontier is None or self._frontier.size <= batch.start
            ):
                self._frontier = batch.frontier
        for listener in self.on_commit:
            listener(batch)
