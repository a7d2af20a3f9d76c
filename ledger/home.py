"""The ledger home: the files that must live outside the database.

``--home DIR`` or ``KPI_LEDGER_HOME`` (default ``./.kpi-ledger``) holds:

* ``ledger.key``         the checkpoint signing key (named after the log's origin);
* ``facts.key``          the key of the principal ``ledger``, which signs the facts the ledger
                         derives itself (an appeal decision's compensating events);
* ``log.vkey``           its verifier keys (note key and cosignature key), safe to publish;
* ``signer-state.json``  the size and root of the last checkpoint this ledger signed;
* ``admin.key`` / ``admin.pub``  the first administrator key, made by ``kpi-ledger init``.

Keeping the signing key and the signer state out of the database means that a person who can
edit the database can neither sign a checkpoint nor make the ledger forget what it signed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from signing.checkpoint import log_verifier_keys
from signing.keys import SigningKey, VerifierKey, read_signing_key, read_verifier_keys

DEFAULT_HOME = ".kpi-ledger"
LEDGER_PRINCIPAL = "ledger"  # who signs derived facts


def home_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("KPI_LEDGER_HOME") or DEFAULT_HOME)


@dataclass(frozen=True)
class LedgerHome:
    path: Path

    @property
    def ledger_key_path(self) -> Path:
        return self.path / "ledger.key"

    @property
    def vkey_path(self) -> Path:
        return self.path / "log.vkey"

    @property
    def state_path(self) -> Path:
        return self.path / "signer-state.json"

    @property
    def facts_key_path(self) -> Path:
        return self.path / "facts.key"

    def facts_key(self) -> SigningKey | None:
        """The key of derived facts, or None for a home made before it existed."""
        if not self.facts_key_path.exists():
            return None
        return read_signing_key(self.facts_key_path)

    @property
    def own_key_files(self) -> tuple[Path, Path]:
        """The home's own private keys: never an administrator's."""
        return (self.ledger_key_path, self.facts_key_path)

    def administrator_keys(self) -> list[Path]:
        """The other private keys in the home (``init`` writes the first administrator's)."""
        if not self.path.exists():
            return []
        return [p for p in sorted(self.path.glob("*.key")) if p not in self.own_key_files]

    def exists(self) -> bool:
        return self.ledger_key_path.exists()

    def ledger_key(self) -> SigningKey:
        if not self.ledger_key_path.exists():
            raise FileNotFoundError(
                f"no ledger key at {self.ledger_key_path}: run 'kpi-ledger init' or pass --home"
            )
        return read_signing_key(self.ledger_key_path)

    def log_keys(self) -> list[VerifierKey]:
        return read_verifier_keys(self.vkey_path)

    def create(self, origin: str, *, facts_key: SigningKey | None = None) -> SigningKey:
        """Create the directory, the ledger's checkpoint key and the key of derived facts
        (``facts_key``, else a new one), refusing to overwrite."""
        if self.exists():
            raise FileExistsError(f"{self.ledger_key_path} exists: this home is initialised")
        self.path.mkdir(parents=True, exist_ok=True)
        key = SigningKey.generate(origin)
        for path, secret in (
            (self.ledger_key_path, key),
            (self.facts_key_path, facts_key or SigningKey.generate(LEDGER_PRINCIPAL)),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret.to_text() + "\n")
        self.vkey_path.write_text("".join(k.to_text() + "\n" for k in log_verifier_keys(key)))
        return key
