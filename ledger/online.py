"""Online verification: the same verifier, reading the database instead of a bundle."""

from __future__ import annotations

from collections.abc import Iterator

from ledger.checkpoints import SignerState
from ledger.config import ConfigError
from ledger.home import LedgerHome
from ledger.store import SealedLog
from signing.verify import TrustedRoot

SIGNER_STATE = "the ledger's signer state"


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


def signer_state_root(home: LedgerHome) -> TrustedRoot | None:
    """The size and root of the last checkpoint this ledger signed, as its home records them.

    The home lives outside the database on purpose: someone who deletes checkpoint rows and
    rewrites entries with recomputed leaf hashes and nodes cannot make it forget. Online
    verification with the home checks the log against it like against a signed checkpoint.
    None when the home has no ``signer-state.json`` (it never signed, or it is not there).
    """
    path = home.state_path
    if not path.is_file():
        return None
    try:
        state = SignerState.from_json(path.read_text(encoding="utf-8"))
        if not isinstance(state.origin, str) or state.size < 0 or len(state.root) != 32:
            raise ValueError("origin, size or root out of range")
    except (ValueError, KeyError, TypeError) as exc:  # JSON, UTF-8 and base64 errors included
        raise ConfigError(f"the ledger's signer state {path} is unreadable: {exc!r}") from None
    return TrustedRoot(state.origin, state.size, state.root, SIGNER_STATE)
