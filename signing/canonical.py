"""Canonical JSON (RFC 8785, JCS) for signed facts, and the rules a payload must obey.

A payload is accepted only if it is I-JSON that survives a round trip unchanged:

* no floats, NaN or infinities (scores and amounts travel as integers or decimal strings);
* integers within ±(2**53 - 1), the range every JSON implementation reads exactly;
* every string (keys included) NFC-normalised, so that "Hồ" typed on two keyboards is one fact;
* times as RFC 3339 UTC strings ending in ``Z``; a date-time string without an offset
  (a "naive" datetime) or with another offset is refused;
* no duplicate object keys.

``prepare`` turns Python values into such a payload (normalising strings, formatting aware
datetimes, refusing what cannot be represented). ``canonical_json`` serialises it as JCS.
``parse_canonical`` reads bytes back and refuses anything that is not exactly the canonical
serialisation of an acceptable value.

``canonical_json`` uses the standard library's C encoder when its output is provably identical
to RFC 8785 (no floats, and no object key outside the Basic Multilingual Plane, where JCS's
UTF-16 key order and Python's code-point order can differ); otherwise it defers to the
``rfc8785`` package. The test-suite checks the two agree on generated values.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import rfc8785

from signing.errors import CanonicalFormError

MAX_SAFE_INTEGER = 2**53 - 1

# A string that looks like a date-time. Group "zone" is empty for a naive datetime.
_DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?P<zone>[Zz]|[+-]\d{2}:?\d{2})?$"
)
_UTC_RE = UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$")

JSONValue = None | bool | int | str | list["JSONValue"] | dict[str, "JSONValue"]


def format_time(value: dt.datetime) -> str:
    """An aware datetime as an RFC 3339 UTC string (``...Z``), microseconds when present."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise CanonicalFormError(
            f"naive datetime {value.isoformat()!r}: give a timezone (times are signed in UTC)"
        )
    utc = value.astimezone(dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def parse_time(text: str, *, field: str = "time") -> dt.datetime:
    """Parse an RFC 3339 UTC string (``Z`` suffix required) into an aware datetime."""
    if not isinstance(text, str) or not _UTC_RE.match(text):
        raise CanonicalFormError(
            f"{field} must be an RFC 3339 UTC time like 2026-03-05T08:00:00Z, got {text!r}"
        )
    head, _, frac = text[:-1].partition(".")
    try:  # the pattern fixed the layout: fromisoformat only checks the calendar
        parsed = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise CanonicalFormError(f"{field} is not a valid time: {text!r}") from exc
    if frac:
        parsed = parsed.replace(microsecond=int((frac + "000000")[:6]))
    return parsed


def _check_string(value: str, path: str) -> None:
    if not unicodedata.is_normalized("NFC", value):
        raise CanonicalFormError(f"{path}: string is not NFC-normalised: {value!r}")
    match = _DATETIME_RE.match(value)
    if match:
        zone = match.group("zone")
        if not zone:
            raise CanonicalFormError(
                f"{path}: naive datetime {value!r}: times must be RFC 3339 UTC ending in Z"
            )
        if not _UTC_RE.match(value):
            raise CanonicalFormError(
                f"{path}: time {value!r} must be written in UTC as YYYY-MM-DDTHH:MM:SS[.f]Z"
            )


MAX_DEPTH = 64


def validate(value: Any, path: str = "$", depth: int = 0) -> None:
    """Raise CanonicalFormError unless ``value`` is an acceptable payload value."""
    if depth > MAX_DEPTH:
        raise CanonicalFormError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalFormError(
                f"{path}: integer {value} is beyond ±(2**53-1); send it as a decimal string"
            )
        return
    if isinstance(value, float):
        raise CanonicalFormError(
            f"{path}: floating-point number {value!r} refused; use an integer or a decimal string"
        )
    if isinstance(value, str):
        _check_string(value, path)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            validate(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalFormError(f"{path}: object key {key!r} is not a string")
            if not unicodedata.is_normalized("NFC", key):
                raise CanonicalFormError(f"{path}: key {key!r} is not NFC-normalised")
            validate(item, f"{path}.{key}", depth + 1)
        return
    raise CanonicalFormError(f"{path}: value of type {type(value).__name__} is not JSON")


def prepare(value: Any, path: str = "$") -> JSONValue:
    """Convert Python values into an acceptable payload value, or refuse them.

    Strings are NFC-normalised; aware datetimes become RFC 3339 UTC strings; dates become
    ``YYYY-MM-DD``; Decimals become decimal strings; tuples become lists. Floats, naive
    datetimes and out-of-range integers are refused.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        validate(value, path)
        return value
    if isinstance(value, float):
        validate(value, path)  # raises
    if isinstance(value, str):
        normalised = unicodedata.normalize("NFC", value)
        _check_string(normalised, path)
        return normalised
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise CanonicalFormError(f"{path}: {value} is not a finite number")
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalFormError(f"{path}: object key {key!r} is not a string")
            nkey = unicodedata.normalize("NFC", key)
            if nkey in out:
                raise CanonicalFormError(f"{path}: key {nkey!r} appears twice after NFC")
            out[nkey] = prepare(item, f"{path}.{nkey}")
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [prepare(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise CanonicalFormError(f"{path}: value of type {type(value).__name__} cannot be signed")


def _keys_in_bmp(value: Any) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if any(ord(ch) > 0xFFFF for ch in key):
                return False
            if not _keys_in_bmp(item):
                return False
    elif isinstance(value, list):
        return all(_keys_in_bmp(item) for item in value)
    return True


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 serialisation of an acceptable value (validated first)."""
    validate(value)
    return _encode_valid(value)


def _encode_valid(value: Any, *, ascii_only: bool = False) -> bytes:
    """RFC 8785 bytes of a value ``validate`` accepted; ``ascii_only``: the caller knows
    every string in it is ASCII (so every key is in the BMP)."""
    if ascii_only or _keys_in_bmp(value):
        return _ENCODER.encode(value).encode("utf-8")
    return bytes(rfc8785.dumps(value))


def _refuse_float(text: str) -> Any:
    raise CanonicalFormError(f"floating-point number {text} refused; use an integer or string")


def _refuse_constant(text: str) -> Any:
    raise CanonicalFormError(f"{text} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in pairs:
        if key in out:
            raise CanonicalFormError(f"duplicate object key {key!r}")
        out[key] = item
    return out


_DECODER = json.JSONDecoder(
    parse_float=_refuse_float, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates
)


def loads_strict(data: bytes | str, *, what: str = "payload") -> Any:
    """Parse JSON refusing floats, NaN and duplicate keys (no canonical-form check)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return _DECODER.decode(text)
    except CanonicalFormError as exc:
        raise CanonicalFormError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CanonicalFormError(f"{what} is not valid UTF-8 JSON: {exc}") from None


_FAST_DECODER = json.JSONDecoder(parse_float=_refuse_float, parse_constant=_refuse_constant)


def parse_canonical(data: bytes, *, what: str = "payload") -> Any:
    """Parse ``data`` and refuse it unless it is exactly the JCS form of an acceptable value.

    The value is read without the duplicate-key hook (a Python call per object) and walked
    once. A duplicate key cannot slip through: the parse keeps one of the two, so the
    canonical form of what was read is shorter than ``data`` and they differ; only then is
    ``data`` read again with the hook, to name the duplicate in the refusal."""
    data = bytes(data)
    try:
        value = _FAST_DECODER.decode(data.decode("utf-8"))
    except CanonicalFormError as exc:
        raise CanonicalFormError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CanonicalFormError(f"{what} is not valid UTF-8 JSON: {exc}") from None
    try:
        validate(value)
    except CanonicalFormError as exc:
        raise CanonicalFormError(f"{what}: {exc}") from None
    if _encode_valid(value, ascii_only=data.isascii()) != data:
        loads_strict(data, what=what)  # a duplicate key is named here
        raise CanonicalFormError(
            f"{what} is not in RFC 8785 canonical form (keys sorted, no whitespace, "
            "minimal escapes): sign the canonical bytes"
        )
    return value
