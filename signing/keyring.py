"""Keys as facts: who could sign what, and from which log position.

Public keys enter the log as facts, so a verifier rebuilds the key state from the log alone:

``key.registered``  ``{"principal", "public_key", "admin"}``
    ``public_key`` is a verifier key line (``name+id+base64``) whose name is the principal.
    Signed by an administrator key; the very first entry of a log (position 0) is the
    self-signed registration of the first administrator key.
``key.rotated``     ``{"principal", "old_keyid", "public_key"}``
    Registers the new key (inheriting the old key's admin flag) and revokes the old key at
    this position. Signed by an administrator key or by the old key itself.
``key.revoked``     ``{"keyid", "reason"}``
    Signed by an administrator key or by the key itself.

A signature counts only if its key was registered at a position before the entry and was
not revoked at a position before the entry (a key may sign its own revocation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from signing.dsse import Envelope
from signing.errors import KeyFactError, KeyFormatError, RevokedKeyError, UnknownKeyError
from signing.keys import SigningKey, VerifierKey

KEY_REGISTERED = "key.registered"
KEY_ROTATED = "key.rotated"
KEY_REVOKED = "key.revoked"
KEY_FACT_TYPES = frozenset({KEY_REGISTERED, KEY_ROTATED, KEY_REVOKED})


class Fact(Protocol):
    """What the key rules read of a fact (``signing.facts.Fact`` or a verifier's claim)."""

    @property
    def actor(self) -> str: ...

    @property
    def keyid(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class KeyRecord:
    keyid: str
    principal: str
    key: VerifierKey
    admin: bool
    registered_at: int
    revoked_at: int | None = None

    def valid_at(self, seq: int) -> bool:
        return self.registered_at < seq and (self.revoked_at is None or self.revoked_at >= seq)


def _string(data: dict[str, Any], name: str, fact_type: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise KeyFactError(f"{fact_type}: data.{name} must be a non-empty string")
    return value


def _verifier(data: dict[str, Any], principal: str, fact_type: str) -> VerifierKey:
    try:
        key = VerifierKey.parse(_string(data, "public_key", fact_type))
    except KeyFormatError as exc:
        raise KeyFactError(f"{fact_type}: data.public_key: {exc}") from None
    if key.name != principal:
        raise KeyFactError(
            f"{fact_type}: public key is named {key.name!r} but the principal is {principal!r}"
        )
    return key


class KeyRing:
    """The key state of a log, replayed entry by entry (pure, no I/O)."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.size = 0  # number of entries applied

    def __len__(self) -> int:
        return len(self.keys)

    def copy(self) -> KeyRing:
        ring = KeyRing()
        ring.keys = dict(self.keys)
        ring.size = self.size
        return ring

    def signer(self, seq: int, fact: Fact) -> KeyRecord:
        """The key that must have signed ``fact`` at position ``seq``, or an error.

        Checks registration, revocation, the actor's ownership of the key and, for key
        facts, the signer's authority. The signature itself is checked by the caller with
        ``record.key`` (so it can be done in parallel).
        """
        if seq == 0 and not self.keys:
            return self._genesis(fact)
        record = self.keys.get(fact.keyid)
        if record is None or record.registered_at >= seq:
            raise UnknownKeyError(f"key {fact.keyid[:16]}… is not registered before position {seq}")
        if record.revoked_at is not None and record.revoked_at < seq:
            raise RevokedKeyError(
                f"key {fact.keyid[:16]}… of {record.principal!r} was revoked at position "
                f"{record.revoked_at}, before position {seq}"
            )
        if record.principal != fact.actor:
            raise UnknownKeyError(
                f"actor {fact.actor!r} signed with key {fact.keyid[:16]}… which belongs to "
                f"{record.principal!r}"
            )
        if fact.type in KEY_FACT_TYPES:
            self._check_authority(record, fact)
        return record

    def _genesis(self, fact: Fact) -> KeyRecord:
        if fact.type != KEY_REGISTERED or fact.data.get("admin") is not True:
            raise KeyFactError(
                "position 0 must be the self-signed registration of an administrator key"
            )
        principal = _string(fact.data, "principal", fact.type)
        key = _verifier(fact.data, principal, fact.type)
        if key.keyid != fact.keyid or principal != fact.actor:
            raise KeyFactError("the first administrator key must sign its own registration")
        return KeyRecord(key.keyid, principal, key, True, registered_at=-1)

    def _check_authority(self, record: KeyRecord, fact: Fact) -> None:
        data = fact.data
        if fact.type == KEY_REGISTERED:
            if not record.admin:
                raise KeyFactError(f"{fact.actor!r} is not an administrator: cannot register keys")
            principal = _string(data, "principal", fact.type)
            key = _verifier(data, principal, fact.type)
            if not isinstance(data.get("admin", False), bool):
                raise KeyFactError("key.registered: data.admin must be true or false")
            if key.keyid in self.keys:
                raise KeyFactError(f"key {key.keyid[:16]}… is already registered")
        elif fact.type == KEY_ROTATED:
            principal = _string(data, "principal", fact.type)
            old = self.keys.get(_string(data, "old_keyid", fact.type))
            if old is None or old.principal != principal:
                raise KeyFactError(f"key.rotated: {principal!r} has no key {data['old_keyid']!r}")
            if old.revoked_at is not None:
                raise KeyFactError("key.rotated: the old key is already revoked")
            if not (record.admin or record.keyid == old.keyid):
                raise KeyFactError("only an administrator or the old key may rotate a key")
            key = _verifier(data, principal, fact.type)
            if key.keyid in self.keys:
                raise KeyFactError(f"key {key.keyid[:16]}… is already registered")
        elif fact.type == KEY_REVOKED:
            target = self.keys.get(_string(data, "keyid", fact.type))
            _string(data, "reason", fact.type)
            if target is None:
                raise KeyFactError(f"key.revoked: unknown key {data['keyid']!r}")
            if target.revoked_at is not None:
                raise KeyFactError(f"key {target.keyid[:16]}… is already revoked")
            if not (record.admin or record.keyid == target.keyid):
                raise KeyFactError("only an administrator or the key itself may revoke a key")

    def apply(self, seq: int, fact: Fact) -> None:
        """Record the effect of an (already authorised) entry at position ``seq``."""
        data = fact.data
        if fact.type == KEY_REGISTERED:
            principal = data["principal"]
            key = _verifier(data, principal, fact.type)
            self.keys[key.keyid] = KeyRecord(
                key.keyid, principal, key, bool(data.get("admin", False)), registered_at=seq
            )
        elif fact.type == KEY_ROTATED:
            old = self.keys[data["old_keyid"]]
            self.keys[old.keyid] = replace(old, revoked_at=seq)
            key = _verifier(data, data["principal"], fact.type)
            self.keys[key.keyid] = KeyRecord(
                key.keyid, old.principal, key, old.admin, registered_at=seq
            )
        elif fact.type == KEY_REVOKED:
            target = self.keys[data["keyid"]]
            self.keys[target.keyid] = replace(target, revoked_at=seq)
        self.size = max(self.size, seq + 1)


def key_registration_data(key: VerifierKey, *, admin: bool = False) -> dict[str, Any]:
    """The data of the ``key.registered`` fact for ``key`` (its name is the principal)."""
    return {"principal": key.name, "public_key": key.to_text(), "admin": admin}


def key_registration(
    signer: SigningKey, key: VerifierKey, *, admin: bool = False, **fact: Any
) -> Envelope:
    """The signed ``key.registered`` fact for ``key`` (its name is the principal).

    ``signer`` is an administrator's key — or ``key``'s own, for the genesis entry.
    Extra keyword arguments (``time``, ``nonce``) go to ``sign_fact``.
    """
    from signing.facts import sign_fact

    return sign_fact(signer, KEY_REGISTERED, key_registration_data(key, admin=admin), **fact)
