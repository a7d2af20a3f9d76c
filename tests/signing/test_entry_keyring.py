"""The entry format and the key rules (registration, rotation, revocation)."""

from __future__ import annotations

import base64

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from signing.entry import Entry, decode_entry
from signing.errors import EntryError, KeyFactError, RevokedKeyError, UnknownKeyError
from signing.facts import Fact, read_fact, sign_fact
from signing.keyring import KeyRing, key_registration
from signing.keys import SigningKey


@given(
    seq=st.integers(0, 2**40),
    version=st.integers(1, 2**31),
    type_=st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable()),
    envelope=st.binary(max_size=64),
)
def test_entry_encoding_is_jcs(seq: int, version: int, type_: str, envelope: bytes) -> None:
    entry = Entry(
        seq,
        "3f2c1c2e-0000-4000-8000-000000000001",
        version,
        type_,
        "2026-03-05T08:00:00.000001Z",
        envelope,
    )
    data = entry.to_bytes()
    assert data == rfc8785.dumps(
        {
            "envelope": base64.b64encode(envelope).decode(),
            "recorded_at": entry.recorded_at,
            "seq": seq,
            "stream": entry.stream,
            "type": type_,
            "version": version,
        }
    )
    assert decode_entry(data) == entry


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"envelope":"","recorded_at":"2026-03-05T08:00:00Z","seq":1,"stream":"s","type":"t",'
        b'"version":1,"x":1}',
        b'{"envelope":"","recorded_at":"2026-03-05T08:00:00","seq":1,"stream":"s","type":"t",'
        b'"version":1}',
        b'{"envelope":"","recorded_at":"2026-03-05T08:00:00Z","seq":-1,"stream":"s","type":"t",'
        b'"version":1}',
        b'{"envelope":"", "recorded_at":"2026-03-05T08:00:00Z","seq":1,"stream":"s","type":"t",'
        b'"version":1}',
    ],
)
def test_malformed_entries(raw: bytes) -> None:
    with pytest.raises(EntryError):
        decode_entry(raw)


def _fact(
    key: SigningKey, fact_type: str, data: dict[str, object], actor: str | None = None
) -> Fact:
    return read_fact(sign_fact(key, fact_type, data, actor=actor).to_bytes())


def _register(admin: SigningKey, key: SigningKey, is_admin: bool = False) -> Fact:
    return read_fact(key_registration(admin, key.verifier(), admin=is_admin).to_bytes())


def _authorise(ring: KeyRing, seq: int, fact: Fact) -> None:
    record = ring.signer(seq, fact)
    fact.verify_signature(record.key)
    ring.apply(seq, fact)


def test_key_lifecycle() -> None:
    admin = SigningKey.generate("admin")
    lan = SigningKey.generate("lan")
    ring = KeyRing()
    _authorise(ring, 0, _register(admin, admin, True))
    with pytest.raises(UnknownKeyError):  # not registered yet
        ring.signer(1, _fact(lan, "document.attested", {}))
    _authorise(ring, 1, _register(admin, lan))
    _authorise(ring, 2, _fact(lan, "document.attested", {}))
    with pytest.raises(KeyFactError, match="not an administrator"):
        ring.signer(3, _register(lan, SigningKey.generate("x")))
    with pytest.raises(UnknownKeyError, match="belongs to"):
        ring.signer(3, _fact(lan, "document.attested", {}, actor="admin"))
    # Rotation by the old key: old key valid up to and including the rotation.
    lan2 = SigningKey("lan", SigningKey.generate("lan")._private)
    _authorise(
        ring,
        3,
        _fact(
            lan,
            "key.rotated",
            {"principal": "lan", "old_keyid": lan.keyid, "public_key": lan2.verifier().to_text()},
        ),
    )
    with pytest.raises(RevokedKeyError, match="revoked at position 3"):
        ring.signer(4, _fact(lan, "document.attested", {}))
    _authorise(ring, 4, _fact(lan2, "document.attested", {}))
    # Revocation by an administrator.
    _authorise(ring, 5, _fact(admin, "key.revoked", {"keyid": lan2.keyid, "reason": "lost"}))
    with pytest.raises(RevokedKeyError):
        ring.signer(6, _fact(lan2, "document.attested", {}))


def test_genesis_must_be_self_signed_admin() -> None:
    admin = SigningKey.generate("admin")
    other = SigningKey.generate("other")
    with pytest.raises(KeyFactError, match="position 0"):
        KeyRing().signer(0, _fact(admin, "document.attested", {}))
    with pytest.raises(KeyFactError, match="sign its own"):
        KeyRing().signer(0, _register(other, admin, True))


@given(
    seq=st.integers(0, 2**53 - 1),
    version=st.integers(0, 2**53 - 1),
    stream=st.text(max_size=12),
    type_=st.text(max_size=20),
    envelope=st.binary(max_size=64),
)
def test_fast_entry_decoder_agrees_with_the_strict_one(
    seq: int, version: int, stream: str, type_: str, envelope: bytes
) -> None:
    from signing.entry import decode_entry_fast

    data = Entry(seq, stream, version, type_, "2026-03-05T08:00:00.000001Z", envelope).to_bytes()
    assert decode_entry_fast(data) == decode_entry(data)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"envelope":"","recorded_at":"2026-03-05T08:00:00","seq":1,"stream":"s","type":"t",'
        b'"version":1}',
        b'{"envelope":"","recorded_at":"2026-03-05T08:00:00Z","seq":01,"stream":"s","type":"t",'
        b'"version":1}',
        b'{"envelope":"A","recorded_at":"2026-03-05T08:00:00Z","seq":1,"stream":"s","type":"t",'
        b'"version":1}',
    ],
)
def test_fast_entry_decoder_refuses_what_the_strict_one_refuses(raw: bytes) -> None:
    from signing.entry import decode_entry_fast

    with pytest.raises(EntryError):
        decode_entry(raw)
    with pytest.raises(EntryError):
        decode_entry_fast(raw)
