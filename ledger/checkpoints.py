"""Signing checkpoints: on demand, every N entries, every T seconds — never inconsistently.

The checkpointer keeps its own memory of the last checkpoint it signed in the ledger home
(``signer-state.json``, beside the private key), not only in the database: someone who can
edit the database cannot make it forget. Before signing size ``n`` after size ``m`` it
recomputes, from the entry bytes themselves, the leaf hashes of entries ``m .. n-1``, checks
that the stored frontier at ``m`` reproduces the root it signed, and extends that frontier
with the recomputed leaves. It signs only if that root equals the root of the stored tree;
otherwise the log was altered and it refuses (``InconsistentLogError``).

It compares roots, not sizes: a log rewritten to the same size (entries truncated and as many
others appended) is refused, not answered with the old checkpoint. And it seals only what the
intake would have accepted: given an ``admit`` check (``domain/admission.py``: every new
entry's signature, key at its position, nonce and domain rules replayed), it signs the log up
to the first entry that check refuses and no further, raising ``SealRefused`` (an alarm: the
operator acts, docs/operations.md) until that entry is gone.

``run_every`` runs it as a background ``Job`` (``ledger/jobs.py``): transient database errors
are retried with back-off and shown in its health; a refusal is its ``refusing`` state.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.config import Database
from ledger.jobs import GIVE_UP, Job, JobTable, LeaderLock, Refusing, heal_pool
from ledger.store import SealedLog, StoredCheckpoint
from signing.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    log_verifier_keys,
    sign_checkpoint,
    verify_checkpoint,
)
from signing.errors import NoteError
from signing.keys import SigningKey
from signing.merkle import EMPTY_ROOT, CompactRange, leaf_hash


class InconsistentLogError(Exception):
    """The log no longer extends the last checkpoint this ledger signed."""


class EmptyLogError(ValueError):
    """There is nothing to checkpoint yet."""


class SealRefused(InconsistentLogError):
    """An entry after the last checkpoint is one the intake would refuse: it is not sealed,
    nor anything after it."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(
            f"entry {seq} would be refused by the intake: {detail}; nothing from position"
            f" {seq} on is sealed until an operator acts (docs/operations.md)"
        )
        self.seq = seq


class Refused(Protocol):
    """What an admission check says of the first entry it refuses."""

    @property
    def seq(self) -> int: ...

    @property
    def rule(self) -> str: ...

    @property
    def detail(self) -> str: ...


#: (start, stop) -> the first entry of [start, stop) the intake would refuse, or None
Admit = Callable[[int, int], "Refused | None"]


@dataclass(frozen=True)
class SignerState:
    origin: str
    size: int
    root: bytes

    def to_json(self) -> str:
        return json.dumps(
            {"origin": self.origin, "size": self.size, "root": base64.b64encode(self.root).decode()}
        )

    @classmethod
    def from_json(cls, text: str) -> SignerState:
        obj = json.loads(text)
        return cls(obj["origin"], int(obj["size"]), base64.b64decode(obj["root"]))


class Checkpointer:
    def __init__(
        self,
        log: SealedLog,
        key: SigningKey,
        state_path: Path,
        *,
        every_entries: int | None = None,
        clock: Callable[[], float] = time.time,
        admit: Admit | None = None,
    ) -> None:
        self.log = log
        self.key = key
        self.origin = key.name
        self.state_path = Path(state_path)
        self.every_entries = every_entries
        self.clock = clock
        self.admit = admit
        self._lock = threading.Lock()
        self.job: Job | None = None
        self._last_note: tuple[str, SignerState] | None = None  # (note, what it signed)
        self.error: InconsistentLogError | None = None  # the last refusal, if any

    # -- state ---------------------------------------------------------------------------
    def state(self) -> SignerState:
        """What this ledger last signed: its state file, else its newest checkpoint in the DB.

        Without the file (a new home, or a lost one), the newest checkpoint in the database
        that verifies under this ledger's key is the floor: the next one must extend it. With
        the file, a newer checkpoint in the database signed by this key (another host of the
        same ledger signed it, docs/operations.md) is the floor, once the stored tree shows
        that it extends what this home signed.
        """
        latest = self.log.latest_checkpoint()
        signed: SignerState | None = None
        if latest is not None:
            try:
                signed = self._verified(latest.note)
            except NoteError as exc:
                if not self.state_path.exists():
                    raise InconsistentLogError(
                        f"the newest checkpoint in the database is not this ledger's: {exc}"
                    ) from None
        if not self.state_path.exists():
            return signed if signed is not None else SignerState(self.origin, 0, EMPTY_ROOT)
        state = SignerState.from_json(self.state_path.read_text())
        if state.origin != self.origin:
            raise InconsistentLogError(
                f"signer state is for origin {state.origin!r}, key is {self.origin!r}"
            )
        if signed is not None and signed.size > state.size:
            own = self.log.frontier(state.size).root() if state.size else EMPTY_ROOT
            if own != state.root or self.log.root(signed.size) != signed.root:
                raise InconsistentLogError(
                    f"the checkpoint of size {signed.size} in the database does not extend the"
                    f" one of size {state.size} this home signed"
                )
            return signed
        return state

    def _verified(self, note: str) -> SignerState:
        """The state a checkpoint note signed by this ledger's key says (``NoteError`` if it
        is not one); the last note verified is remembered: the periodic checkpointer asks
        every second, and the newest note rarely changes."""
        known = self._last_note
        if known is not None and known[0] == note:
            return known[1]
        verified = verify_checkpoint(note, log_verifier_keys(self.key))
        state = SignerState(self.origin, verified.checkpoint.size, verified.checkpoint.root)
        self._last_note = (note, state)
        return state

    def _save_state(self, state: SignerState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_path)

    # -- signing -------------------------------------------------------------------------
    def checkpoint(self) -> SignedCheckpoint:
        """Sign a checkpoint of the whole log now (or return the latest if nothing is new).

        Raises ``InconsistentLogError`` if the log no longer extends what was signed, and
        ``SealRefused`` (after signing the part before it, if any is new) when an entry
        after the last checkpoint is one the intake would refuse."""
        with self._lock:
            state = self.state()
            size = self.log.log_size()
            if size == 0:
                raise EmptyLogError("the log is empty: there is nothing to seal yet")
            if size == state.size:
                if self.log.root(size) != state.root:
                    raise InconsistentLogError(
                        f"the log still has {size} entries but its root is no longer the one"
                        f" signed at that size: entries were rewritten"
                    )
                latest = self.log.latest_checkpoint()
                if latest is not None and latest.size == size and latest.root == state.root:
                    return SignedCheckpoint(
                        Checkpoint(self.origin, size, latest.root), latest.note, None
                    )
            refused = None
            if self.admit is not None and size > state.size:
                refused = self.admit(state.size, size)
                if refused is not None:
                    size = refused.seq
            if refused is not None and size <= state.size:
                raise SealRefused(refused.seq, f"[{refused.rule}] {refused.detail}")
            root = self._checked_root(state, size)
            stamp = int(self.clock())
            note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key, stamp)
            self.log.add_checkpoint(
                StoredCheckpoint(
                    size, root, note, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
                )
            )
            self._save_state(SignerState(self.origin, size, root))
            if refused is not None:
                raise SealRefused(refused.seq, f"[{refused.rule}] {refused.detail}")
            return SignedCheckpoint(Checkpoint(self.origin, size, root), note, stamp)

    def due(self) -> bool:
        """Whether the log differs from what was last signed (in size, or in root)."""
        state = self.state()
        size = self.log.log_size()
        return size != state.size or (size > 0 and self.log.root(size) != state.root)

    def tick(self) -> SignedCheckpoint | None:
        """One turn of the periodic checkpointer: sign if the log changed. A refusal is
        raised as ``Refusing`` (the job's alarm state) and remembered in ``error``."""
        try:
            if not self.due():
                self.error = None
                return None
            signed = self.checkpoint()
        except InconsistentLogError as exc:
            self.error = exc
            raise Refusing(str(exc)) from exc
        self.error = None
        return signed

    def _checked_root(self, state: SignerState, size: int) -> bytes:
        if size < state.size:
            raise InconsistentLogError(
                f"the log has {size} entries but this ledger already signed {state.size}: "
                "entries were removed"
            )
        frontier = self.log.frontier(state.size) if state.size else CompactRange()
        if frontier.root() != state.root:
            raise InconsistentLogError(
                f"the stored tree no longer matches the checkpoint of size {state.size}"
            )
        for row in self.log.read_rows(state.size, size):
            if row.entry is None:
                raise InconsistentLogError(f"entry {row.seq} has lost its event")
            if leaf_hash(row.entry) != row.leaf_hash:
                raise InconsistentLogError(f"entry {row.seq} no longer matches its leaf hash")
            frontier.append(row.leaf_hash)
        if frontier.size != size:
            raise InconsistentLogError(f"entries are missing between {state.size} and {size}")
        root = frontier.root()
        if root != self.log.root(size):
            raise InconsistentLogError("stored tree nodes disagree with the entries")
        return root

    def maybe_checkpoint(self, size: int | None = None) -> SignedCheckpoint | None:
        """Sign if at least ``every_entries`` entries arrived since the last checkpoint."""
        if not self.every_entries:
            return None
        size = self.log.log_size() if size is None else size
        if size - self.state().size >= self.every_entries:
            return self.checkpoint()
        return None

    def run_every(
        self,
        seconds: float,
        *,
        database: Database | None = None,
        on_fatal: Callable[[Job], object] | None = None,
        give_up: float = GIVE_UP,
    ) -> Job:
        """Sign a checkpoint every ``seconds`` (when the log changed) in a background job.

        Database errors are retried with back-off; a refusal (``InconsistentLogError``) is the
        job's ``refusing`` state — an alarm, looked at again every ``seconds``, nothing sealed
        past it. With ``database``, the job runs in one process of all those on that database
        (leader election) and reports its state in ``kpi_jobs``."""
        job = Job(
            "checkpointer",
            self.tick,
            interval=seconds,
            lock=LeaderLock(database, "checkpointer") if database is not None else None,
            table=JobTable(database) if database is not None else None,
            on_fatal=on_fatal,
            give_up=give_up,
            heal=self._heal_pool,
        )
        self.job = job
        return job.start()

    def _heal_pool(self) -> None:
        heal_pool(getattr(self.log, "datastore", None))

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop()
