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
import re
from dataclasses import dataclass

from signing.canonical import MAX_SAFE_INTEGER, UTC_TIME
from signing.encoding import b64decode_strict
from signing.errors import EntryError

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


def json_string(text: str) -> str:
    """A string as JSON (RFC 8785 escaping, UTF-8 kept as is)."""
    return _string(text)


def encode_entry_parts(
    seq: int,
    stream_json: str,
    version: int,
    type_json: str,
    recorded_at_json: str,
    envelope: bytes,
) -> bytes:
    """``encode_entry`` with the string fields already JSON-encoded (for batches that share
    them: the sealer encodes a batch's time once and each topic once)."""
    b64 = base64.b64encode(envelope).decode("ascii")
    return (
        f'{{"envelope":"{b64}","recorded_at":{recorded_at_json},"seq":{int(seq)},'
        f'"stream":{stream_json},"type":{type_json},"version":{int(version)}}}'
    ).encode()


def encode_entry(
    seq: int, stream: str, version: int, type_: str, recorded_at: str, envelope: bytes
) -> bytes:
    """Canonical entry bytes (fast path; see module docstring)."""
    b64 = base64.b64encode(envelope).decode("ascii")
    return (
        f'{{"envelope":"{b64}","recorded_at":{_string(recorded_at)},"seq":{int(seq)},'
        f'"stream":{_string(stream)},"type":{_string(type_)},"version":{int(version)}}}'
    ).encode()


_DELIMITERS = (b'","recorded_at":"', b'","seq":', b',"stream":"', b'","type":"', b'","version":')
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*\Z')  # a JSON string that needs no escape
_NUMBER = re.compile(rb"(?:0|[1-9][0-9]*)\Z")


def _split_entry(data: bytes) -> list[bytes] | None:
    """The six raw values of a canonical entry, cut at its fixed delimiters; None if unsure."""
    if not (data.startswith(b'{"envelope":"') and data.endswith(b"}")):
        return None
    parts: list[bytes] = []
    start = 13
    for delimiter in _DELIMITERS:
        end = data.find(delimiter, start)
        if end < 0:
            return None
        parts.append(data[start:end])
        start = end + len(delimiter)
    parts.append(data[start:-1])
    # parts: envelope, recorded_at, seq, stream, type, version. Base64 holds no quote; the
    # strings must need no escaping and the numbers be plain, or the strict parser decides.
    if not (
        _PLAIN_STRING.match(parts[1])
        and _PLAIN_STRING.match(parts[3])
        and _PLAIN_STRING.match(parts[4])
        and _NUMBER.match(parts[2])
        and _NUMBER.match(parts[5])
    ):
        return None
    return parts


def decode_entry_fast(data: bytes) -> Entry:
    """``decode_entry`` for entries whose strings need no escapes (all the ledger writes).

    Cuts the entry at its fixed delimiters instead of parsing JSON; anything it is not sure
    of goes to the strict parser.
    """
    parts = _split_entry(data)
    if parts is None:
        return decode_entry(data)
    envelope, recorded_at, seq, stream, type_, version = parts
    try:
        entry = Entry(
            int(seq),
            stream.decode(),
            int(version),
            type_.decode(),
            recorded_at.decode(),
            b64decode_strict(envelope, "entry.envelope", EntryError),
        )
    except UnicodeDecodeError:
        return decode_entry(data)
    if entry.seq > MAX_SAFE_INTEGER or entry.version > MAX_SAFE_INTEGER:
        raise EntryError("entry.seq and entry.version must be I-JSON integers")
    if not UTC_TIME.match(entry.recorded_at):
        raise EntryError(f"entry.recorded_at is not an RFC 3339 UTC time: {entry.recorded_at!r}")
    return entry


def decode_entry(data: bytes) -> Entry:
    """Parse entry bytes, refusing anything that is not exactly a canonical entry.

    Re-encoding and comparing proves the canonical form, the field set and the JSON types
    at once; only the value ranges need checking besides.
    """
    try:
        obj = json.loads(data)
        entry = Entry(
            obj["seq"],
            obj["stream"],
            obj["version"],
            obj["type"],
            obj["recorded_at"],
            b64decode_strict(obj["envelope"], "entry.envelope", EntryError),
        )
        same = type(entry.seq) is int and type(entry.version) is int and (entry.to_bytes() == data)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise EntryError(f"entry is not a JSON entry object: {exc}") from None
    if not same:
        raise EntryError(f"entry bytes are not the canonical entry {{{', '.join(ENTRY_FIELDS)}}}")
    if not (0 <= entry.seq <= MAX_SAFE_INTEGER and 0 <= entry.version <= MAX_SAFE_INTEGER):
        raise EntryError("entry.seq and entry.version must be non-negative I-JSON integers")
    if not UTC_TIME.match(entry.recorded_at):
        raise EntryError(f"entry.recorded_at is not an RFC 3339 UTC time: {entry.recorded_at!r}")
    return entry
