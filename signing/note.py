"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures and timestamped
Ed25519 cosignatures (c2sp.org/tlog-cosignature, type 0x04).

A note is a text ending in a newline, a blank line, then signature lines
``— <key name> base64(key id[4] ‖ signature)``. Verifiers ignore lines from unknown keys,
reject the note if a known key's signature fails, and require at least one known key.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from signing.encoding import b64decode_strict
from signing.errors import NoteError
from signing.keys import COSIGNATURE_V1, ED25519, SigningKey, VerifierKey

EM_DASH = "\u2014"
MAX_SIGNATURES = 100


def cosignature_message(timestamp: int, body: str) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # for cosignatures: 8-byte timestamp ‖ 64-byte signature

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{EM_DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class VerifiedNote:
    text: str
    verified_by: tuple[VerifierKey, ...]
    timestamps: tuple[int, ...]  # from verified cosignatures, POSIX seconds


def sign_line(text: str, key: SigningKey) -> NoteSignature:
    """An Ed25519 note signature over ``text``."""
    _check_text(text)
    return NoteSignature(key.name, key.verifier(ED25519).note_key_id, key.sign(text.encode()))


def cosign_line(text: str, key: SigningKey, timestamp: int) -> NoteSignature:
    """A timestamped Ed25519 cosignature (tlog-cosignature v1) over a checkpoint ``text``."""
    _check_text(text)
    if not 0 <= timestamp < 2**63:
        raise NoteError("cosignature timestamp out of range")
    sig = key.sign(cosignature_message(timestamp, text))
    return NoteSignature(
        key.name, key.verifier(COSIGNATURE_V1).note_key_id, struct.pack(">Q", timestamp) + sig
    )


def assemble(text: str, signatures: Iterable[NoteSignature]) -> str:
    lines = "".join(s.line() for s in signatures)
    if not lines:
        raise NoteError("a signed note needs at least one signature")
    return f"{text}\n{lines}"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteError("note text must not contain control characters other than newline")


def split(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines (no verification)."""
    if not note.endswith("\n"):
        raise NoteError("signed note must end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("signed note has no blank line before its signatures")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    signatures = []
    for line in sig_block.splitlines():
        if not line.startswith(EM_DASH + " "):
            raise NoteError(f"malformed signature line {line[:40]!r}")
        parts = line[2:].split(" ")
        if len(parts) != 2 or not parts[0]:
            raise NoteError(f"malformed signature line {line[:40]!r}")
        blob = b64decode_strict(parts[1], "signature line", NoteError)
        if len(blob) < 5:
            raise NoteError("signature line too short")
        signatures.append(NoteSignature(parts[0], blob[:4], blob[4:]))
    if not signatures:
        raise NoteError("signed note has no signature lines")
    if len(signatures) > MAX_SIGNATURES:
        raise NoteError(f"signed note has more than {MAX_SIGNATURES} signatures")
    return text, signatures


def open_note(note: str, keys: Sequence[VerifierKey]) -> VerifiedNote:
    """Verify ``note`` against trusted ``keys`` and return its text.

    Lines from unknown keys are ignored; a failing line from a known key rejects the note;
    at least one known key must have signed it.
    """
    text, signatures = split(note)
    known = {(k.name, k.note_key_id): k for k in keys}
    verified: list[VerifierKey] = []
    stamps: list[int] = []
    for sig in signatures:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            continue
        if key.sig_type == ED25519:
            ok = len(sig.signature) == 64 and key.verify(sig.signature, text.encode())
        else:
            ok = len(sig.signature) == 72
            if ok:
                (stamp,) = struct.unpack(">Q", sig.signature[:8])
                ok = key.verify(sig.signature[8:], cosignature_message(stamp, text))
                if ok:
                    stamps.append(stamp)
        if not ok:
            raise NoteError(f"signature by known key {key.name!r} does not verify")
        verified.append(key)
    if not verified:
        raise NoteError("note is not signed by any trusted key")
    return VerifiedNote(text, tuple(verified), tuple(stamps))
