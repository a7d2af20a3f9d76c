"""DSSE envelopes (secure-systems-lab/dsse v1) over canonical JSON payloads.

The signature is over ``PAE(payloadType, payload)``::

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

An envelope travels as JSON ``{"payloadType", "payload", "signatures": [{"keyid", "sig"}]}``
with standard base64 (RFC 4648 §4, padded). The ledger stores the envelope's canonical JSON
bytes (``Envelope.to_bytes``) exactly and never re-serialises it before hashing or verifying.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from signing.encoding import b64decode_strict
from signing.errors import EnvelopeError

PAYLOAD_TYPE = "application/vnd.kpi-ledger.fact+json"
MAX_ENVELOPE_BYTES = 256 * 1024


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    return b64decode_strict(text, what, EnvelopeError)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "payload": _b64(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": _b64(s.sig)} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        """Canonical (RFC 8785) JSON bytes of the envelope.

        Every value is ASCII (base64, hex key ids, a media type), so sorted-key compact
        JSON is exactly the JCS form.
        """
        return json.dumps(
            self.to_json_obj(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_json_obj(cls, obj: Any) -> Envelope:
        if not isinstance(obj, dict):
            raise EnvelopeError("envelope must be a JSON object")
        extra = set(obj) - {"payload", "payloadType", "signatures"}
        if extra:
            raise EnvelopeError(f"envelope has unknown fields: {sorted(extra)}")
        payload_type = obj.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise EnvelopeError("envelope.payloadType must be a non-empty string")
        if payload_type != PAYLOAD_TYPE:
            raise EnvelopeError(
                f"envelope.payloadType must be {PAYLOAD_TYPE!r}, got {payload_type!r}"
            )
        if "payload" not in obj:
            raise EnvelopeError("envelope.payload is missing")
        payload = _unb64(obj["payload"], "envelope.payload")
        sigs = obj.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise EnvelopeError("envelope.signatures must be a non-empty list")
        signatures = []
        for i, item in enumerate(sigs):
            if not isinstance(item, dict) or set(item) - {"keyid", "sig"}:
                raise EnvelopeError(f"envelope.signatures[{i}] must be {{keyid, sig}}")
            keyid = item.get("keyid")
            if not isinstance(keyid, str) or not keyid:
                raise EnvelopeError(f"envelope.signatures[{i}].keyid must be a string")
            signatures.append(Signature(keyid, _unb64(item.get("sig"), f"signatures[{i}].sig")))
        return cls(payload_type, payload, tuple(signatures))

    @classmethod
    def parse(cls, data: bytes | str) -> Envelope:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > MAX_ENVELOPE_BYTES:
            raise EnvelopeError(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise EnvelopeError(f"envelope is not valid JSON: {exc}") from None
        return cls.from_json_obj(obj)

    def signature_for(self, keyid: str) -> Signature:
        for s in self.signatures:
            if s.keyid == keyid:
                return s
        raise EnvelopeError(f"envelope has no signature by key {keyid}")
