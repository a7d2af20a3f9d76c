"""Key formats, key ids, DSSE envelopes and fact payloads."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from signing.dsse import PAYLOAD_TYPE, Envelope, pae
from signing.errors import (
    CanonicalFormError,
    EnvelopeError,
    KeyFormatError,
    SignatureError,
)
from signing.facts import read_fact, sign_fact
from signing.keys import SigningKey, VerifierKey, read_signing_key, write_key_pair

SEED = bytes(range(32))


def test_pae_matches_dsse_spec_example() -> None:
    # From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_key_files_round_trip(tmp_path: Path) -> None:
    key = SigningKey.from_seed("lan.nguyen", SEED)
    private, public = write_key_pair(key, tmp_path)
    assert private.stat().st_mode & 0o777 == 0o600
    again = read_signing_key(private)
    assert again.public_raw == key.public_raw and again.keyid == key.keyid
    vkey = VerifierKey.parse(public.read_text())
    assert vkey.keyid == key.keyid and vkey.name == "lan.nguyen"
    with pytest.raises(KeyFormatError, match="overwrite"):
        write_key_pair(key, tmp_path)


@pytest.mark.parametrize(
    "text",
    ["no-plus-signs", "a+deadbeef+AAAA", "a+00000000+" + base64.b64encode(b"\x01" + SEED).decode()],
)
def test_bad_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFormatError):
        VerifierKey.parse(text)


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\tname"])
def test_bad_key_names_are_refused(name: str) -> None:
    with pytest.raises(KeyFormatError):
        SigningKey.from_seed(name, SEED)


def test_sign_and_read_fact() -> None:
    key = SigningKey.from_seed("lan.nguyen", SEED)
    when = dt.datetime(2026, 3, 5, 8, 0, tzinfo=dt.UTC)
    env = sign_fact(key, "document.attested", {"sha256": "ab" * 32, "title": "Hồ sơ"}, time=when)
    fact = read_fact(env.to_bytes())
    assert fact.actor == "lan.nguyen" and fact.keyid == key.keyid
    assert fact.time == "2026-03-05T08:00:00Z" and len(fact.nonce) == 32
    fact.verify_signature(key.verifier())
    other = SigningKey.generate("lan.nguyen")
    with pytest.raises(SignatureError):
        fact.verify_signature(other.verifier())


def test_tampered_payload_fails_signature() -> None:
    key = SigningKey.from_seed("lan.nguyen", SEED)
    env = sign_fact(key, "document.attested", {"sha256": "ab" * 32})
    obj = env.to_json_obj()
    payload = json.loads(base64.b64decode(obj["payload"]))
    payload["data"]["sha256"] = "cd" * 32
    obj["payload"] = base64.b64encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    fact = read_fact(json.dumps(obj).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        fact.verify_signature(key.verifier())


def _envelope_with(payload: bytes) -> bytes:
    return Envelope(PAYLOAD_TYPE, payload, ()).to_bytes()


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"not json", EnvelopeError, "not valid JSON"),
        (b"[]", EnvelopeError, "JSON object"),
        (b'{"payloadType":"x","payload":"","signatures":[]}', EnvelopeError, "payloadType"),
        (
            b'{"payloadType":"%s","payload":"***","signatures":[{"keyid":"a","sig":""}]}'
            % PAYLOAD_TYPE.encode(),
            EnvelopeError,
            "base64",
        ),
        (
            b'{"payloadType":"%s","payload":"","signatures":[]}' % PAYLOAD_TYPE.encode(),
            EnvelopeError,
            "non-empty list",
        ),
    ],
)
def test_malformed_envelopes(raw: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        read_fact(raw)


def test_payload_schema_is_enforced() -> None:
    key = SigningKey.from_seed("lan.nguyen", SEED)
    with pytest.raises(CanonicalFormError, match=r"payload\.type"):
        sign_fact(key, "NotDotted", {})
    with pytest.raises(CanonicalFormError, match="floating-point"):
        sign_fact(key, "work.declared", {"hours": 7.5})
    with pytest.raises(CanonicalFormError, match="naive datetime"):
        sign_fact(key, "work.declared", {"at": "2026-03-05T08:00:00"})
