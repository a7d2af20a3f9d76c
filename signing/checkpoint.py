"""Checkpoints (c2sp.org/tlog-checkpoint): signed statements of the log's size and root.

Body::

    <origin>
    <tree size>
    <base64 root hash>

The ledger signs each checkpoint with two lines under the same key name (the origin):
an Ed25519 note signature (type 0x01), which any signed-note verifier checks, and a
timestamped cosignature (type 0x04, c2sp.org/tlog-cosignature) that states *when* the ledger
signed it. Verifiers that know only the 0x01 key ignore the second line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from signing.encoding import b64decode_strict
from signing.errors import NoteError
from signing.keys import COSIGNATURE_V1, ED25519, SigningKey, VerifierKey, check_key_name
from signing.note import assemble, cosign_line, open_note, sign_line

_SIZE_RE = re.compile(r"^(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint body must be origin, size and root, each on a line")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not origin:
            raise NoteError("checkpoint origin is empty")
        if any(not line for line in lines[3:-1]):
            raise NoteError("checkpoint extension lines must not be empty")
        if not _SIZE_RE.match(size_text):
            raise NoteError(f"checkpoint size {size_text!r} is not a decimal without leading 0")
        root = b64decode_strict(root_text, "checkpoint root", NoteError)
        if len(root) != 32:
            raise NoteError("checkpoint root must be 32 bytes")
        return cls(origin, int(size_text), root)


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str
    timestamp: int | None  # POSIX seconds from the ledger's cosignature, if present


def log_verifier_keys(key: SigningKey) -> list[VerifierKey]:
    """The verifier keys that go into ``log.vkey``: the note key and the cosignature key."""
    return [key.verifier(ED25519), key.verifier(COSIGNATURE_V1)]


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey, timestamp: int) -> str:
    """Sign a checkpoint (note signature + timestamped cosignature) under the origin's name."""
    check_key_name(checkpoint.origin)
    if key.name != checkpoint.origin:
        raise NoteError(f"log key is named {key.name!r}, checkpoint origin {checkpoint.origin!r}")
    body = checkpoint.body()
    return assemble(body, [sign_line(body, key), cosign_line(body, key, timestamp)])


def verify_checkpoint(note: str, log_keys: Sequence[VerifierKey]) -> SignedCheckpoint:
    """Verify a checkpoint note against the log's verifier keys; the origin must be theirs."""
    opened = open_note(note, log_keys)
    checkpoint = Checkpoint.parse(opened.text)
    if not any(k.name == checkpoint.origin and k.sig_type == ED25519 for k in opened.verified_by):
        raise NoteError(
            f"checkpoint for origin {checkpoint.origin!r} is not signed by that log's key"
        )
    stamp = max(opened.timestamps) if opened.timestamps else None
    return SignedCheckpoint(checkpoint, note, stamp)
