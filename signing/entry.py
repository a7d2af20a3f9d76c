"""The log entry: the bytes each Merkle leaf covers.

An entry is the RFC 8785 (JCS) serialisation of::

    {
      "envelope": "<base64 of the exact stored envelope bytes>",
      "recorded_at": "2026-03-05T08:00:01.123456Z",   # the ledger's clock when sealed
      "seq": 42,                                       # gap-free position, from 0
      "stream": "6f1c...-...",                         # aggregate id (UUID, lowercase, hyphens)
      "type": "key.registered",                        # the stored event's topic
      "version": 3                                     # position within the stream, from 1
    }

The envelope is kept as base64 of the exact bytes the event store holds, so the entry commits
to those bytes without re-serialising them. Leaf hash = SHA-256(0x00 ‖ entry bytes).
``encode_entry`` builds the bytes directly (the keys are fixed and in JCS order); the tests
check it against the ``rfc8785`` package.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from signing.canonical import MAX_SAFE_INTEGER, parse_time
from signing.encoding import b64decode_strict
from signing.errors import CanonicalFormError, EntryError

ENTRY_FIELDS = ("envelope", "recorded_at", "seq", "stream", "type", "version")
_string = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True)
class Entry:
    seq: int
    stream: str
    version: int
    type: str
    recorded_at: str
    envelope: bytes

    def to_bytes(self) -> bytes:
        return encode_entry(
            self.seq, self.stream, self.version, self.type, self.recorded_at, self.envelope
        )


def encode_entry(
    seq: int, stream: str, version: int, type_: str, recorded_at: str, envelope: bytes
) -> bytes:
    """Canonical entry bytes (fast path; see module docstring)."""
    b64 = base64.b64encode(envelope).decode("ascii")
    return (
        f'{{"envelope":"{b64}","recorded_at":{_string(recorded_at)},"seq":{int(seq)},'
        f'"stream":{_string(stream)},"type":{_string(type_)},"version":{int(version)}}}'
    ).encode()


def decode_entry(data: bytes) -> Entry:
    """Parse entry bytes, refusing anything that is not exactly a canonical entry."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise EntryError(f"entry is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or tuple(sorted(obj)) != ENTRY_FIELDS:
        raise EntryError(f"entry must have exactly the fields {', '.join(ENTRY_FIELDS)}")
    seq, version = obj["seq"], obj["version"]
    for name, value in (("seq", seq), ("version", version)):
        if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
            raise EntryError(f"entry.{name} must be a non-negative integer")
    for name in ("envelope", "recorded_at", "stream", "type"):
        if not isinstance(obj[name], str):
            raise EntryError(f"entry.{name} must be a string")
    envelope = b64decode_strict(obj["envelope"], "entry.envelope", EntryError)
    try:
        parse_time(obj["recorded_at"], field="entry.recorded_at")
    except CanonicalFormError as exc:
        raise EntryError(str(exc)) from None
    entry = Entry(seq, obj["stream"], version, obj["type"], obj["recorded_at"], envelope)
    if entry.to_bytes() != bytes(data):
        raise EntryError("entry bytes are not in canonical form")
    return entry
