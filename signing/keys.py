"""Ed25519 keys, their identifiers and their text formats.

One key pair serves two purposes, each with its own identifier:

* **Facts (DSSE)**: the key id is the lowercase hex SHA-256 of the 32-byte raw public key
  (``fact_keyid``). It names the key in envelopes and payloads, independently of any name.
* **Signed notes (C2SP)**: the key id is the first 4 bytes of
  SHA-256(name ‖ 0x0A ‖ type ‖ public key) (``note_key_id``), type 0x01 for Ed25519 note
  signatures and 0x04 for timestamped cosignatures (c2sp.org/tlog-cosignature).

Key files use the signed-note text formats, so that standard tools read them:

* private key (``NAME.key``): ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ 32-byte seed)>``
* verifier key (``NAME.pub``, ``log.vkey``): ``<name>+<hex key id>+<base64(type ‖ public key)>``
"""

from __future__ import annotations

import base64
import hashlib
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from signing.encoding import b64decode_strict
from signing.errors import KeyFormatError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_KNOWN_TYPES = (ED25519, COSIGNATURE_V1)


def check_key_name(name: str) -> str:
    """A key name: non-empty, NFC, no Unicode space, no '+' (signed-note rules)."""
    if not isinstance(name, str) or not name:
        raise KeyFormatError("key name must be a non-empty string")
    if not unicodedata.is_normalized("NFC", name):
        raise KeyFormatError(f"key name {name!r} is not NFC-normalised")
    if any(ch.isspace() or ch == "+" or ord(ch) < 0x20 for ch in name):
        raise KeyFormatError(f"key name {name!r} must not contain spaces, control chars or '+'")
    return name


def fact_keyid(public_raw: bytes) -> str:
    """The key id used in DSSE envelopes and payloads: hex SHA-256 of the raw public key."""
    return hashlib.sha256(public_raw).hexdigest()


def note_key_id(name: str, public_raw: bytes, sig_type: int = ED25519) -> bytes:
    """The 4-byte signed-note key id: SHA-256(name ‖ '\\n' ‖ type ‖ key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_raw).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A public key with its name and signature type, as in a ``.pub``/``.vkey`` line."""

    name: str
    public_raw: bytes
    sig_type: int = ED25519
    _public: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in _KNOWN_TYPES:
            raise KeyFormatError(f"unsupported signature type 0x{self.sig_type:02x}")
        if len(self.public_raw) != 32:
            raise KeyFormatError("an Ed25519 public key is 32 bytes")
        try:
            public = Ed25519PublicKey.from_public_bytes(self.public_raw)
        except ValueError as exc:
            raise KeyFormatError(f"invalid Ed25519 public key: {exc}") from exc
        object.__setattr__(self, "_public", public)

    @property
    def note_key_id(self) -> bytes:
        return note_key_id(self.name, self.public_raw, self.sig_type)

    @property
    def keyid(self) -> str:
        return fact_keyid(self.public_raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def with_type(self, sig_type: int) -> VerifierKey:
        return VerifierKey(self.name, self.public_raw, sig_type)

    def to_text(self) -> str:
        blob = base64.b64encode(bytes([self.sig_type]) + self.public_raw).decode()
        return f"{self.name}+{self.note_key_id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        text = text.strip()
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError(f"verifier key must be name+hexid+base64, got {text[:60]!r}")
        name, hex_id, blob = parts
        raw = b64decode_strict(blob, "verifier key", KeyFormatError)
        if len(raw) != 33:
            raise KeyFormatError("verifier key must hold a type byte and a 32-byte key")
        key = cls(name, raw[1:], raw[0])
        if hex_id.lower() != key.note_key_id.hex() or len(hex_id) != 8:
            raise KeyFormatError(f"verifier key id {hex_id} does not match key name and key")
        return key


class SigningKey:
    """An Ed25519 private key with the name it signs under."""

    def __init__(self, name: str, private: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._private = private
        self.public_raw = private.public_key().public_bytes_raw()
        self.keyid = fact_keyid(self.public_raw)

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise KeyFormatError("an Ed25519 seed is 32 bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verifier(self, sig_type: int = ED25519) -> VerifierKey:
        return VerifierKey(self.name, self.public_raw, sig_type)

    def to_text(self) -> str:
        seed = self._private.private_bytes_raw()
        blob = base64.b64encode(bytes([ED25519]) + seed).decode()
        key_id = note_key_id(self.name, self.public_raw).hex()
        return f"PRIVATE+KEY+{self.name}+{key_id}+{blob}"

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise KeyFormatError("private key must be PRIVATE+KEY+name+hexid+base64")
        _, _, name, hex_id, blob = parts
        raw = b64decode_strict(blob, "private key", KeyFormatError)
        if len(raw) != 33 or raw[0] != ED25519:
            raise KeyFormatError("private key must hold type byte 0x01 and a 32-byte seed")
        key = cls.from_seed(name, raw[1:])
        if hex_id.lower() != note_key_id(name, key.public_raw).hex():
            raise KeyFormatError(f"private key id {hex_id} does not match its name and key")
        return key

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r}, keyid={self.keyid[:16]}…)"


def key_file_stem(name: str) -> str:
    """File name for a key: names may be schema-less URLs, so '/' becomes '_'."""
    return name.replace("/", "_").replace("\\", "_")


def write_key_pair(key: SigningKey, directory: Path) -> tuple[Path, Path]:
    """Write ``NAME.key`` (mode 0600) and ``NAME.pub`` into ``directory`` ('/' → '_')."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = key_file_stem(key.name)
    private_path = directory / f"{stem}.key"
    public_path = directory / f"{stem}.pub"
    if private_path.exists():
        raise KeyFormatError(f"{private_path} already exists; refusing to overwrite a key")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.to_text() + "\n")
    public_path.write_text(key.verifier().to_text() + "\n")
    return private_path, public_path


def read_signing_key(path: Path) -> SigningKey:
    try:
        return SigningKey.parse(Path(path).read_text())
    except OSError as exc:
        raise KeyFormatError(f"cannot read private key {path}: {exc.strerror}") from exc


def read_verifier_keys(path: Path) -> list[VerifierKey]:
    """Read one verifier key per non-empty line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise KeyFormatError(f"cannot read verifier key file {path}: {exc.strerror}") from exc
    keys = [VerifierKey.parse(line) for line in lines if line.strip()]
    if not keys:
        raise KeyFormatError(f"{path} holds no verifier key")
    return keys
