"""Signed facts: the payload every envelope carries, and how to sign and read one.

A fact payload is a canonical JSON object::

    {
      "actor": "lan.nguyen",              # the principal asserting the fact
      "data": {...},                      # the fact itself (schema per fact type)
      "idempotency_key": "...",           # optional: a client's retry key
      "keyid": "<hex sha256 of pubkey>",  # the key that signs it (must belong to actor)
      "nonce": "<32-64 hex chars>",       # unique per envelope: replays are refused
      "time": "2026-03-05T08:00:00Z",     # when the actor claims it happened (UTC)
      "type": "work.declared"             # fact type, dotted lowercase
    }
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from signing.canonical import canonical_json, loads_strict, parse_canonical, parse_time, prepare
from signing.dsse import PAYLOAD_TYPE, Envelope, Signature
from signing.errors import CanonicalFormError, EnvelopeError, SignatureError
from signing.keys import SigningKey, VerifierKey, check_key_name

REQUIRED_FIELDS = frozenset({"actor", "data", "keyid", "nonce", "time", "type"})
OPTIONAL_FIELDS = frozenset({"idempotency_key"})
_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32,64}$")
_KEYID_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Fact:
    """A parsed (not yet signature-checked) signed fact."""

    envelope: Envelope
    envelope_bytes: bytes
    actor: str
    keyid: str
    time: str
    nonce: str
    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None

    @cached_property
    def claimed_at(self) -> dt.datetime:
        return parse_time(self.time)

    @property
    def signature(self) -> Signature:
        return self.envelope.signature_for(self.keyid)

    @property
    def signature_checked(self) -> bool:
        """True once ``verify_signature`` has succeeded on this fact."""
        return bool(self.__dict__.get("_signature_ok"))

    def verify_signature(self, key: VerifierKey) -> None:
        """Raise SignatureError unless the actor's key signed this payload.

        A success is remembered on this fact: the key id is the SHA-256 of the public key, so
        a second call with a key of the same id is a call with the same key, and the
        signature over the same bytes needs no second check. (The ledger checks signatures
        before its writer lock and again, then for free, under it: ``LedgerService.precheck``.)
        """
        if key.keyid != self.keyid:
            raise SignatureError(f"key {key.keyid[:16]}… is not the payload's key {self.keyid}")
        if self.signature_checked:
            return
        if not key.verify(self.signature.sig, self.envelope.pae()):
            raise SignatureError(f"signature by key {self.keyid[:16]}… does not verify")
        self.__dict__["_signature_ok"] = True


def new_nonce() -> str:
    return secrets.token_hex(16)


def make_payload(
    key: SigningKey,
    fact_type: str,
    data: Any,
    *,
    actor: str | None = None,
    time: dt.datetime | str | None = None,
    nonce: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Build a payload (strings NFC-normalised, time in UTC) ready to be signed."""
    if time is None:
        time = dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {
        "actor": actor if actor is not None else key.name,
        "data": data,
        "keyid": key.keyid,
        "nonce": nonce or new_nonce(),
        "time": time,
        "type": fact_type,
    }
    if idempotency_key is not None:
        payload["idempotency_key"] = idempotency_key
    prepared = prepare(payload)
    assert isinstance(prepared, dict)
    check_payload(prepared)
    return prepared


def sign_payload(key: SigningKey, payload: dict[str, Any]) -> Envelope:
    """Sign a prepared payload's canonical bytes with ``key``."""
    body = canonical_json(payload)
    envelope = Envelope(PAYLOAD_TYPE, body, ())
    return Envelope(PAYLOAD_TYPE, body, (Signature(key.keyid, key.sign(envelope.pae())),))


def sign_fact(key: SigningKey, fact_type: str, data: Any, **kwargs: Any) -> Envelope:
    """Make and sign a fact payload in one step."""
    return sign_payload(key, make_payload(key, fact_type, data, **kwargs))


def check_payload(payload: Any) -> None:
    """Raise CanonicalFormError unless ``payload`` follows the fact schema."""
    if not isinstance(payload, dict):
        raise CanonicalFormError("payload must be a JSON object")
    missing = REQUIRED_FIELDS - set(payload)
    if missing:
        raise CanonicalFormError(f"payload is missing {sorted(missing)}")
    unknown = set(payload) - REQUIRED_FIELDS - OPTIONAL_FIELDS
    if unknown:
        raise CanonicalFormError(f"payload has unknown fields {sorted(unknown)}")
    actor = payload["actor"]
    if not isinstance(actor, str):
        raise CanonicalFormError("payload.actor must be a string")
    try:
        check_key_name(actor)
    except ValueError as exc:
        raise CanonicalFormError(f"payload.actor: {exc}") from None
    if not isinstance(payload["keyid"], str) or not _KEYID_RE.match(payload["keyid"]):
        raise CanonicalFormError("payload.keyid must be 64 lowercase hex chars")
    if not isinstance(payload["nonce"], str) or not _NONCE_RE.match(payload["nonce"]):
        raise CanonicalFormError("payload.nonce must be 32 to 64 lowercase hex chars")
    if not isinstance(payload["type"], str) or not _TYPE_RE.match(payload["type"]):
        raise CanonicalFormError(
            f"payload.type must be dotted lowercase like 'work.declared', got {payload['type']!r}"
        )
    parse_time(payload["time"], field="payload.time")
    if not isinstance(payload["data"], dict):
        raise CanonicalFormError("payload.data must be a JSON object")
    key = payload.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
        raise CanonicalFormError("payload.idempotency_key must be a string of 1 to 200 chars")


def read_fact(envelope_bytes: bytes, *, strict: bool = True) -> Fact:
    """Parse an envelope and its payload. Signatures are checked by ``Fact.verify_signature``.

    ``Fact.envelope_bytes`` is the envelope's canonical form: what the ledger stores.

    With ``strict`` the payload must be exactly canonical (what the ledger requires at intake);
    the offline verifier relaxes it because the signature already fixes the bytes.
    """
    envelope = Envelope.parse(envelope_bytes)
    read = parse_canonical if strict else loads_strict
    payload = read(envelope.payload)
    check_payload(payload)
    try:
        envelope.signature_for(payload["keyid"])
    except EnvelopeError:
        raise EnvelopeError(
            f"envelope carries no signature by the payload's key {payload['keyid']}"
        ) from None
    return Fact(
        envelope=envelope,
        envelope_bytes=envelope.to_bytes(),
        actor=payload["actor"],
        keyid=payload["keyid"],
        time=payload["time"],
        nonce=payload["nonce"],
        type=payload["type"],
        data=payload["data"],
        idempotency_key=payload.get("idempotency_key"),
    )
