"""Online verification: the same verifier, reading the database instead of a bundle."""

from __future__ import annotations

from collections.abc import Iterator

from ledger.store import SealedLog


class DatabaseSource:
    """A ``signing.verify.LogSource`` over a sealed log in a database."""

    def __init__(self, log: SealedLog) -> None:
        self.log = log
        self._size = log.log_size()

    def checkpoint_notes(self) -> list[str]:
        return [cp.note for cp in self.log.checkpoints()]

    def entries(self) -> Iterator[tuple[int, bytes | None, bytes | None]]:
        for row in self.log.read_rows(0, self._size):
            yield row.seq, row.entry, row.leaf_hash

    def size_hint(self) -> int:
        return self._size
