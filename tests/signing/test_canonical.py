"""RFC 8785 canonical form and the payload rules (floats, big ints, naive times, NFC)."""

from __future__ import annotations

import datetime as dt
import unicodedata
from decimal import Decimal

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from signing.canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
    format_time,
    parse_canonical,
    parse_time,
    prepare,
)
from signing.errors import CanonicalFormError

nfc_text = (
    st.text(max_size=12)
    .map(lambda s: unicodedata.normalize("NFC", s))
    .filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | nfc_text.filter(lambda s: not s[:4].isdigit()),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nfc_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fast_path_equals_rfc8785(value: object) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
    assert parse_canonical(canonical_json(value)) == value


def test_keys_beyond_bmp_use_utf16_order() -> None:
    # U+1F600 sorts before U+FB01 in UTF-16 (surrogate 0xD83D < 0xFB01), after it in code points.
    value = {"\U0001f600": 1, "\ufb01": 2}
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1.5, "floating-point"),
        (float("nan"), "floating-point"),
        (2**53, "beyond"),
        (-(2**53), "beyond"),
        ("2026-03-05T08:00:00", "naive datetime"),
        ("2026-03-05 08:00", "naive datetime"),
        ("2026-03-05T08:00:00+07:00", "UTC"),
        ("Ho\u0302\u0300", "NFC"),
        ({"a": b"bytes"}, "not JSON"),
    ],
)
def test_refusals_name_the_problem(value: object, words: str) -> None:
    with pytest.raises(CanonicalFormError, match=words):
        canonical_json(value)


def test_prepare_normalises_and_formats() -> None:
    when = dt.datetime(2026, 3, 5, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    out = prepare({"name": "Ho\u0302\u0300ng", "at": when, "n": Decimal("1.50"), "t": (1, 2)})
    assert out == {"name": "Hồng", "at": "2026-03-05T08:00:00Z", "n": "1.50", "t": [1, 2]}
    with pytest.raises(CanonicalFormError, match="naive datetime"):
        prepare({"at": dt.datetime(2026, 3, 5, 8, 0)})
    with pytest.raises(CanonicalFormError, match="floating-point"):
        prepare({"score": 89.5})


def test_parse_canonical_refuses_non_canonical_bytes() -> None:
    with pytest.raises(CanonicalFormError, match="canonical"):
        parse_canonical(b'{"b":1, "a":2}')
    with pytest.raises(CanonicalFormError, match="duplicate"):
        parse_canonical(b'{"a":1,"a":2}')
    with pytest.raises(CanonicalFormError, match="duplicate object key 'b'"):
        parse_canonical(b'{"a":{"b":1,"b":1}}')  # the same pair twice, deep inside
    with pytest.raises(CanonicalFormError, match="canonical"):  # JCS writes the character
        parse_canonical(b'{"a":"\\ud83d\\ude00"}')
    assert parse_canonical('{"a":"Hồ 😀","😀":1}'.encode()) == {"a": "Hồ 😀", "😀": 1}
    with pytest.raises(CanonicalFormError, match="floating-point"):
        parse_canonical(b'{"a":1.0}')
    with pytest.raises(CanonicalFormError, match="not a JSON number"):
        parse_canonical(b'{"a":NaN}')
    with pytest.raises(CanonicalFormError, match="UTF-8 JSON"):
        parse_canonical(b"\xff")


def test_time_round_trip() -> None:
    when = dt.datetime(2026, 3, 5, 8, 0, 1, 250000, tzinfo=dt.UTC)
    assert format_time(when) == "2026-03-05T08:00:01.250000Z"
    assert parse_time(format_time(when)) == when
    with pytest.raises(CanonicalFormError):
        parse_time("2026-02-30T08:00:00Z")


@pytest.mark.parametrize("depth", [65, 5000])
def test_deep_nesting_is_refused_not_crashed(depth: int) -> None:
    text = b'{"a":' * depth + b"1" + b"}" * depth
    with pytest.raises(CanonicalFormError):
        parse_canonical(text)


def test_deeply_nested_envelope_is_a_clear_refusal() -> None:
    from signing.errors import EnvelopeError
    from signing.facts import read_fact

    with pytest.raises(EnvelopeError, match="not valid JSON"):
        read_fact(b"[" * 100_000 + b"]" * 100_000)
