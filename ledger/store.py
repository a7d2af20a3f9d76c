"""The read side of the sealed log, shared by the SQLite and PostgreSQL recorders.

A recorder that mixes in ``SealedLog`` answers: the log's size, the entries (rebuilt from the
event row and its log row — the same bytes that were hashed when sealed), stored Merkle
nodes, roots, inclusion and consistency proofs (O(log n) node reads), checkpoints, nonces and
idempotency tokens. Backends implement the small ``_sql_*`` methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.sealer import Sealer
from signing.checkpoint import Checkpoint
from signing.entry import Entry, decode_entry, encode_entry
from signing.errors import NoteError, ProofError
from signing.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    hash_range,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    verify_inclusion,
)
from signing.note import split

READ_BATCH = 2000


class ReplayedEnvelopeError(IntegrityError):
    """An envelope with the same nonce is already in the log."""

    def __init__(self, nonce: str, message: str | None = None) -> None:
        super().__init__(message or f"an envelope with nonce {nonce} is already in the log")
        self.nonce = nonce


class HeadMoved(Exception):
    """The log's head at the commit is not the one the batch was checked against: another
    writer appended in between (this one had lost its writer lock). Nothing was stored."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(
            f"the batch was checked for positions from {expected} but the log's head is"
            f" {found}: another writer appended in between"
        )
        self.expected = expected
        self.found = found


class DuplicateIdempotencyKeyError(ReplayedEnvelopeError):
    """An entry with the same idempotency token (same actor, same idempotency key) is already in
    the log, or earlier in the same batch: a concurrent writer got there first.

    ``token`` is the colliding ``idempotency_token``; ``nonce`` is the nonce of the envelope that
    was refused, "" if unknown (it is *not* in the log; ``SealedLog.idempotency_seqs([token])``
    gives the position of the original). Nothing of the batch was recorded.
    """

    def __init__(self, token: str, nonce: str | None = None, message: str | None = None) -> None:
        super().__init__(
            nonce or "",
            message or f"an entry with idempotency token {token} is already in the log",
        )
        self.token = token


def idempotency_token(actor: str, key: str) -> str:
    """What ``log_entries.idem`` holds for a fact with an idempotency key: lowercase hex
    SHA-256 of ``actor + "\\n" + key`` (UTF-8). Actor names hold no newline, so two different
    (actor, key) pairs never share a token."""
    return hashlib.sha256(f"{actor}\n{key}".encode()).hexdigest()


@dataclass(frozen=True)
class LogRow:
    """One sealed entry as stored: ``entry`` is None when its event row is missing."""

    seq: int
    notification_id: int
    entry: bytes | None
    leaf_hash: bytes
    topic: str | None = None


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    signed_at: str


def _stream(originator_id: Any) -> str:
    if isinstance(originator_id, UUID):
        return str(originator_id)
    if isinstance(originator_id, str) and len(originator_id) == 32:
        try:
            return str(UUID(hex=originator_id))
        except ValueError:
            return originator_id
    return str(originator_id)


def build_row(row: Sequence[Any]) -> LogRow:
    """(seq, notification_id, recorded_at, leaf_hash, originator_id, version, topic, state)."""
    seq, nid, recorded_at, leaf, originator_id, version, topic, state = row
    entry = None
    if state is not None:
        entry = encode_entry(seq, _stream(originator_id), version, topic, recorded_at, bytes(state))
    return LogRow(seq, nid, entry, bytes(leaf), topic)


class SealedLog:
    """Read access to the sealed log (mixed into the recorders)."""

    sealer: Sealer  # the recorder's: builds each batch's log rows and Merkle nodes
    # The head the next insert's batch was checked against (set by the writer for the
    # duration of its save): sealing at another head raises HeadMoved, inside the transaction.
    expected_head: int | None = None

    def check_head(self, head: int) -> None:
        expected = self.expected_head
        if expected is not None and head != expected:
            raise HeadMoved(expected, head)

    # -- backend hooks -------------------------------------------------------------------
    def _sql_log_size(self) -> int:
        raise NotImplementedError

    def _sql_rows(self, start: int, stop: int) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _sql_nodes(self, coords: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        raise NotImplementedError

    def _sql_checkpoints(self, newest_first: bool, limit: int | None) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _sql_insert_checkpoint(self, cp: StoredCheckpoint) -> None:
        raise NotImplementedError

    def _sql_meta(self, key: str) -> str | None:
        raise NotImplementedError

    def _sql_set_meta(self, key: str, value: str) -> None:
        raise NotImplementedError

    def _sql_nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        raise NotImplementedError

    def _sql_idempotency_seqs(self, tokens: Sequence[str]) -> dict[str, int]:
        raise NotImplementedError

    def _sql_seqs_for_notifications(self, ids: Sequence[int]) -> dict[int, int]:
        raise NotImplementedError

    def _sql_stream_before(self, stream: UUID, before: int) -> list[Sequence[Any]]:
        """(version, topic, state) of ``stream``'s events sealed before ``before``, in
        version order."""
        raise NotImplementedError

    def _sql_topic_entries(self, topics: Sequence[str], before: int) -> list[Sequence[Any]]:
        """(seq, state) of the events with one of ``topics`` sealed before ``before``, in
        seq order."""
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------
    def log_size(self) -> int:
        return self._sql_log_size()

    def read_rows(self, start: int = 0, stop: int | None = None) -> Iterator[LogRow]:
        """Entries in sequence order, fetched in batches (constant memory)."""
        stop = self.log_size() if stop is None else stop
        position = start
        while position < stop:
            batch = self._sql_rows(position, min(stop, position + READ_BATCH))
            if not batch:
                return
            for raw in batch:
                yield build_row(raw)
            position = int(batch[-1][0]) + 1

    def read_entry(self, seq: int) -> Entry | None:
        """The decoded entry at position ``seq``, or None if the log has no such position.

        Raises ``LookupError`` if the position is sealed but its event row is missing (a damaged
        database: ``kpi-ledger verify`` names it).
        """
        for row in self.read_rows(seq, seq + 1):
            if row.entry is None:
                raise LookupError(f"entry {seq} is sealed but its event row is missing")
            return decode_entry(row.entry)
        return None

    def read_nodes(self, coords: Collection[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        missing = [c for c in coords if c[0] < 0]
        if missing:
            raise ValueError(f"bad node coordinates {missing}")
        return self._sql_nodes(coords)

    def frontier(self, size: int) -> CompactRange:
        coords = perfect_subtrees(0, size)
        nodes = self.read_nodes(coords)
        try:
            return CompactRange(size, [nodes[c] for c in coords])
        except KeyError as exc:
            raise LookupError(f"the log has no stored node {exc.args[0]} for size {size}") from None

    def root(self, size: int | None = None) -> bytes:
        size = self.log_size() if size is None else size
        if size == 0:
            return EMPTY_ROOT
        nodes: Mapping[tuple[int, int], bytes] = self.read_nodes(perfect_subtrees(0, size))
        return hash_range(0, size, nodes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(index, size, self.read_nodes)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return consistency_proof(size1, size2, self.read_nodes)

    def receipt_proof(
        self, seq: int, checkpoint: StoredCheckpoint, proof: Sequence[bytes] | None = None
    ) -> list[bytes]:
        """The inclusion proof of entry ``seq`` under ``checkpoint`` (or ``proof``, one the
        caller already has), checked before anyone is handed it: the entry's bytes as they are
        now, hashed, must lead to the checkpoint's signed root. A log changed behind the
        ledger's back (a same-size rewrite, an entry edited) raises ``ProofError`` here
        instead of producing a receipt that fails its holder's check."""
        row = next(iter(self.read_rows(seq, seq + 1)), None)
        if row is None or row.entry is None:
            raise ProofError(f"entry {seq} is missing from the log (its event row is gone)")
        hashes = list(proof) if proof is not None else self.inclusion_proof(seq, checkpoint.size)
        try:  # the root the note says, not the column beside it
            signed = Checkpoint.parse(split(checkpoint.note)[0])
        except NoteError as exc:
            raise ProofError(f"the stored checkpoint of size {checkpoint.size}: {exc}") from None
        if signed.size != checkpoint.size:
            raise ProofError(f"the stored checkpoint of size {checkpoint.size} signs another size")
        try:
            verify_inclusion(leaf_hash(row.entry), seq, signed.size, hashes, signed.root)
        except ProofError as exc:
            raise ProofError(
                f"entry {seq} as the log holds it now is not the entry the checkpoint of size"
                f" {checkpoint.size} signed ({exc}): the log was altered"
            ) from None
        return hashes

    def checkpoints(
        self, *, newest_first: bool = False, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        return [
            StoredCheckpoint(int(r[0]), bytes(r[1]), str(r[2]), str(r[3]))
            for r in self._sql_checkpoints(newest_first, limit)
        ]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        found = self.checkpoints(newest_first=True, limit=1)
        return found[0] if found else None

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        self._sql_insert_checkpoint(checkpoint)

    def meta(self, key: str) -> str | None:
        return self._sql_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self._sql_set_meta(key, value)

    def nonce_seq(self, nonce: str) -> int | None:
        return self.nonce_seqs([nonce]).get(nonce)

    def nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        """The positions of the entries that already used any of ``nonces`` (one query)."""
        return self._sql_nonce_seqs(nonces) if nonces else {}

    def settled_nonce_seqs(self, nonces: Sequence[str]) -> dict[str, int]:
        """``nonce_seqs`` once no write is in flight (PostgreSQL waits for the writer's table
        lock; SQLite's writer is in this process, and its failed commit has rolled back)."""
        return self.nonce_seqs(nonces)

    def idempotency_seqs(self, tokens: Sequence[str]) -> dict[str, int]:
        """The positions of the entries that carry any of ``tokens`` (``idempotency_token``
        values), in one query; tokens not in the log are absent from the answer."""
        return self._sql_idempotency_seqs(tokens) if tokens else {}

    def seqs_for_notifications(self, ids: Sequence[int]) -> dict[int, int]:
        """Map notification ids (the event store's, with gaps) to log positions."""
        return self._sql_seqs_for_notifications(ids) if ids else {}

    def stream_before(self, stream: UUID, before: int) -> list[StoredEvent]:
        """The stored events of ``stream`` sealed at positions before ``before``, in version
        order: the stream as it stood at that position (one query; the rule replay's as-of
        state, ``domain/admission.py``)."""
        return [
            StoredEvent(stream, int(version), str(topic), bytes(state))
            for version, topic, state in self._sql_stream_before(stream, before)
        ]

    def topic_entries(self, topics: Sequence[str], before: int) -> list[tuple[int, bytes]]:
        """``(seq, envelope)`` of the entries before ``before`` whose event has one of
        ``topics`` (e.g. the key facts, to rebuild the key ring as of a position), in seq
        order (one query)."""
        if not topics:
            return []
        return [(int(seq), bytes(state)) for seq, state in self._sql_topic_entries(topics, before)]
