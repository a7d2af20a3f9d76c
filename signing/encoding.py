"""Strict base64: standard alphabet, padded (RFC 4648 §4), as every format here requires."""

from __future__ import annotations

import binascii

from signing.errors import IntegrityError


def b64decode_strict(text: object, what: str, error: type[IntegrityError]) -> bytes:
    """Decode ``text`` or raise ``error`` saying that ``what`` is not standard padded base64."""
    if not isinstance(text, str | bytes):
        raise error(f"{what} must be a base64 string")
    try:  # validates and decodes in one pass (no regex pre-scan as in base64.b64decode)
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise error(f"{what} is not standard padded base64") from None
