"""Precise error types of the integrity layer.

Every refusal says what was wrong in words a person can act on. The classes form
one tree so that callers can catch broadly (``IntegrityError``) or narrowly.
"""

from __future__ import annotations


class IntegrityError(Exception):
    """Base class of every error raised by ``signing``."""


class CanonicalFormError(IntegrityError, ValueError):
    """A payload cannot be signed or accepted as canonical JSON (RFC 8785).

    Raised for floats, NaN and infinities, integers beyond the I-JSON range,
    naive datetimes, strings that are not NFC-normalised, non-canonical bytes.
    """


class EnvelopeError(IntegrityError, ValueError):
    """A DSSE envelope is malformed (not JSON, missing fields, bad base64...)."""


class SignatureError(IntegrityError):
    """A signature does not verify, or was made by a key that may not sign here."""


class KeyFormatError(IntegrityError, ValueError):
    """A key, key file or verifier key is malformed."""


class NoteError(IntegrityError, ValueError):
    """A signed note (or checkpoint) is malformed or not signed by a trusted key."""


class ProofError(IntegrityError):
    """An inclusion or consistency proof is malformed or does not verify."""


class EntryError(IntegrityError, ValueError):
    """A log entry's bytes do not follow the entry format."""


class UnknownKeyError(SignatureError):
    """The signing key was not registered before the entry's position."""


class RevokedKeyError(SignatureError):
    """The signing key was revoked at or before the entry's position."""


class KeyFactError(IntegrityError, ValueError):
    """A key registration, rotation or revocation breaks the key rules."""
