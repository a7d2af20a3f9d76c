"""Signing checkpoints: on demand, every N entries, every T seconds — never inconsistently.

The checkpointer keeps its own memory of the last checkpoint it signed in the ledger home
(``signer-state.json``, beside the private key), not only in the database: someone who can
edit the database cannot make it forget. Before signing size ``n`` after size ``m`` it
recomputes, from the entry bytes themselves, the leaf hashes of entries ``m .. n-1``, checks
that the stored frontier at ``m`` reproduces the root it signed, and extends that frontier
with the recomputed leaves. It signs only if that root equals the root of the stored tree;
otherwise the log was altered and it refuses (``InconsistentLogError``).
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
    ) -> None:
        self.log = log
        self.key = key
        self.origin = key.name
        self.state_path = Path(state_path)
        self.every_entries = every_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: InconsistentLogError | None = None

    # -- state ---------------------------------------------------------------------------
    def state(self) -> SignerState:
        """What this ledger last signed: its state file, else its newest checkpoint in the DB.

        Without the file (a new home, or a lost one), the newest checkpoint in the database
        that verifies under this ledger's key is the floor: the next one must extend it.
        """
        if not self.state_path.exists():
            latest = self.log.latest_checkpoint()
            if latest is None:
                return SignerState(self.origin, 0, EMPTY_ROOT)
            try:
                signed = verify_checkpoint(latest.note, log_verifier_keys(self.key))
            except NoteError as exc:
                raise InconsistentLogError(
                    f"the newest checkpoint in the database is not this ledger's: {exc}"
                ) from None
            return SignerState(self.origin, signed.checkpoint.size, signed.checkpoint.root)
        state = SignerState.from_json(self.state_path.read_text())
        if state.origin != self.origin:
            raise InconsistentLogError(
                f"signer state is for origin {state.origin!r}, key is {self.origin!r}"
            )
        return state

    def _save_state(self, state: SignerState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        os.replace(tmp, self.state_path)

    # -- signing -------------------------------------------------------------------------
    def checkpoint(self) -> SignedCheckpoint:
        """Sign a checkpoint of the whole log now (or return the latest if nothing is new)."""
        with self._lock:
            state = self.state()
            size = self.log.log_size()
            if size == 0:
                raise EmptyLogError("the log is empty: there is nothing to seal yet")
            if size == state.size:
                latest = self.log.latest_checkpoint()
                if latest is not None and latest.size == size and latest.root == state.root:
                    return SignedCheckpoint(
                        Checkpoint(self.origin, size, latest.root), latest.note, None
                    )
            root = self._checked_root(state, size)
            stamp = int(self.clock())
            note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key, stamp)
            self.log.add_checkpoint(
                StoredCheckpoint(
                    size, root, note, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
                )
            )
            self._save_state(SignerState(self.origin, size, root))
            return SignedCheckpoint(Checkpoint(self.origin, size, root), note, stamp)

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
        self, seconds: float, on_error: Callable[[Exception], None] | None = None
    ) -> threading.Thread:
        """Sign a checkpoint every ``seconds`` (when the log grew) in a daemon thread.

        A refusal (``InconsistentLogError``) stops the loop and is passed to ``on_error``:
        a ledger that finds its log altered must stop sealing and say so.
        """

        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    if self.log.log_size() != self.state().size:
                        self.checkpoint()
                except InconsistentLogError as exc:
                    self.error = exc
                    if on_error is not None:
                        on_error(exc)
                    return

        thread = threading.Thread(target=loop, name="checkpointer", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
