"""Keys as facts: a principal (person or system) and the public keys registered to it.

The rules (who may register, rotate or revoke, and from which position a key counts) live in
``signing.keyring`` so that the offline verifier applies exactly the same ones; this module
records the facts as events of a ``Principal`` stream.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id
from signing.keyring import KEY_REGISTERED, KEY_REVOKED, KEY_ROTATED
from signing.keys import VerifierKey


class Principal(SignedAggregate):
    """A person or system that signs facts, with its keys (by key id)."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({KEY_REGISTERED, KEY_ROTATED, KEY_REVOKED})

    class Enrolled(SignedCreated):
        """The principal's first key was registered."""

        def apply(self, aggregate: Principal) -> None:
            aggregate.name = self.data["principal"]
            aggregate.admin = bool(self.data.get("admin", False))
            aggregate.add_key(self.data)

    class KeyRegistered(SignedEvent):
        def apply(self, aggregate: Principal) -> None:
            aggregate.add_key(self.data)

    class KeyRotated(SignedEvent):
        def apply(self, aggregate: Principal) -> None:
            aggregate.revoked.add(self.data["old_keyid"])
            aggregate.add_key(self.data)

    class KeyRevoked(SignedEvent):
        def apply(self, aggregate: Principal) -> None:
            aggregate.revoked.add(self.data["keyid"])

    def __init__(self) -> None:
        self.name = ""
        self.admin = False
        self.keys: dict[str, str] = {}  # keyid -> verifier key text
        self.revoked: set[str] = set()

    def add_key(self, data: dict[str, Any]) -> None:
        key = VerifierKey.parse(str(data["public_key"]))
        self.keys[key.keyid] = key.to_text()

    @property
    def active_keys(self) -> list[str]:
        return [k for k in self.keys if k not in self.revoked]

    @staticmethod
    def id_for(name: str) -> UUID:
        return stream_id("principal", name)

    @staticmethod
    def event_for(fact_type: str) -> type[SignedEvent]:
        """The event a key fact adds to an existing principal."""
        return {
            KEY_REGISTERED: Principal.KeyRegistered,
            KEY_ROTATED: Principal.KeyRotated,
            KEY_REVOKED: Principal.KeyRevoked,
        }[fact_type]
