"""The application service: intake order is seal order; every refusal records nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Ledger

from domain.errors import (
    InvalidFact,
    KeyRefused,
    MalformedFact,
    Refusal,
    ReplayRefused,
    SignatureRefused,
    UnknownFactType,
)
from domain.keys import Principal
from domain.service import Appended, LedgerService
from ledger.config import parse_database
from ledger.online import DatabaseSource
from signing.dsse import Envelope, Signature
from signing.facts import Fact, sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey
from signing.verify import verify
from tests.domain.world import refused_raw


def _register(admin: SigningKey, key: SigningKey) -> bytes:
    return key_registration(admin, key.verifier(), admin=False).to_bytes()


def test_a_batch_is_sealed_in_the_order_it_was_checked(ledger: Ledger) -> None:
    size = ledger.service.sealed.log_size()  # the administrator, lan and minh
    khoa = SigningKey.generate("khoa")
    batch = [
        _register(ledger.admin, khoa),
        sign_fact(khoa, "document.attested", {"sha256": "aa" * 32}).to_bytes(),
        sign_fact(ledger.admin, "key.revoked", {"keyid": khoa.keyid, "reason": "left"}).to_bytes(),
        sign_fact(khoa, "document.attested", {"sha256": "bb" * 32}).to_bytes(),
    ]
    outcomes = ledger.service.submit_many(batch)
    assert [o.seq for o in outcomes[:3]] == [size, size + 1, size + 2]  # type: ignore[union-attr]
    assert isinstance(outcomes[3], KeyRefused)
    report = verify(DatabaseSource(ledger.service.sealed), [], workers=1)
    assert report.problems == [] and report.signatures_checked == size + 3


def test_each_refusal_records_nothing(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    good = sign_fact(lan, "document.attested", {"sha256": "aa" * 32})
    ledger.service.submit(good.to_bytes())
    stranger = SigningKey.generate("lan")
    fresh = sign_fact(lan, "document.attested", {"sha256": "dd" * 32})
    forged = Envelope(
        fresh.payload_type, fresh.payload, (Signature(lan.keyid, stranger.sign(fresh.pae())),)
    )
    reused_nonce = sign_fact(  # another fact under an used nonce
        lan, "document.attested", {"sha256": "ee" * 32}, nonce=json.loads(good.payload)["nonce"]
    )
    cases: list[tuple[bytes, type[Refusal], str]] = [
        (reused_nonce.to_bytes(), ReplayRefused, ReplayRefused.rule),
        (b'{"payloadType":', MalformedFact, MalformedFact.rule),
        (sign_fact(lan, "work.teleported", {}).to_bytes(), UnknownFactType, UnknownFactType.rule),
        (
            sign_fact(lan, "document.attested", {"sha256": "zz"}).to_bytes(),
            InvalidFact,
            InvalidFact.rule,
        ),
        (
            sign_fact(stranger, "document.attested", {"sha256": "cc" * 32}).to_bytes(),
            KeyRefused,
            KeyRefused.rule,
        ),
        (forged.to_bytes(), SignatureRefused, SignatureRefused.rule),
        (_register(lan, SigningKey.generate("khoa")), InvalidFact, "key.rule"),  # no admin
    ]
    for raw, error, rule in cases:
        refusal = refused_raw(ledger.service, raw, rule)
        assert isinstance(refusal, error) and refusal.detail, refusal


def test_key_rotation_through_the_service(ledger: Ledger) -> None:
    service = ledger.service
    lan, lan2 = ledger.users["lan"], SigningKey.generate("lan")
    rotated = service.submit(
        sign_fact(
            lan,
            "key.rotated",
            {
                "principal": "lan",
                "old_keyid": lan.keyid,
                "public_key": lan2.verifier().to_text(),
            },
        ).to_bytes()
    )
    assert isinstance(rotated, Appended) and rotated.version == 2
    with pytest.raises(KeyRefused):
        service.submit(sign_fact(lan, "document.attested", {"sha256": "aa" * 32}).to_bytes())
    service.submit(sign_fact(lan2, "document.attested", {"sha256": "aa" * 32}).to_bytes())
    principal = service.repository.get(Principal.id_for("lan"))
    assert principal.active_keys == [lan2.keyid]


def test_a_restarted_service_rebuilds_its_key_ring(ledger: Ledger) -> None:
    lan = ledger.users["lan"]
    revoked = sign_fact(ledger.admin, "key.revoked", {"keyid": lan.keyid, "reason": "x"})
    ledger.service.submit(revoked.to_bytes())
    ledger.reopen()
    with pytest.raises(KeyRefused, match="revoked"):
        ledger.service.submit(sign_fact(lan, "document.attested", {"sha256": "aa" * 32}).to_bytes())


def test_the_key_scan_reads_only_what_is_new(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ledger.service
    ledger.attest("lan", 5)
    top = service.recorder.max_notification_id()
    assert service._cursor == top  # its own batches move the cursor: nothing to rescan
    reads: list[tuple[int, int]] = []  # (start, notifications read)
    select = service.recorder.select_notifications

    def spy(start: int, *args: Any, **kwargs: Any) -> Any:
        found = select(start, *args, **kwargs)
        reads.append((start, len(found)))
        return found

    monkeypatch.setattr(service.recorder, "select_notifications", spy)
    service.refresh_keyring()
    assert reads == []  # nobody else wrote: nothing is read
    other = LedgerService(ledger.database)
    try:
        other.submit(
            sign_fact(ledger.users["lan"], "document.attested", {"sha256": "ff" * 32}).to_bytes()
        )
    finally:
        other.close()
    service.refresh_keyring()
    assert reads == [(top + 1, 1)]  # another writer's entry, read once, from where it stopped
    assert service._cursor == service.recorder.max_notification_id()
    service.refresh_keyring()
    assert reads == [(top + 1, 1)]


def test_bootstrap_writes_entry_0_and_the_log_identity_once(db_url: str) -> None:
    from domain.errors import AlreadyInitialised
    from signing.checkpoint import log_verifier_keys

    app = LedgerService(parse_database(db_url))
    try:
        ledger_key, admin = SigningKey.generate("kpi.test/boot"), SigningKey.generate("admin")
        assert app.bootstrap(ledger_key, admin).seq == 0
        assert app.sealed.meta("origin") == "kpi.test/boot"
        assert app.sealed.meta("log_vkeys") == "".join(
            k.to_text() + "\n" for k in log_verifier_keys(ledger_key)
        )
        with pytest.raises(AlreadyInitialised):
            app.bootstrap(ledger_key, SigningKey.generate("admin"))
        assert app.sealed.log_size() == 1
    finally:
        app.close()


def test_prechecked_facts_get_the_same_answers_as_envelopes(ledger: Ledger) -> None:
    """``precheck`` (outside the writer lock) parses and checks signatures; what it hands
    ``submit_many`` is judged exactly as the raw envelopes would be, nothing recorded for a
    refusal, and a forged signature is never taken for a checked one."""
    lan = ledger.users["lan"]
    stranger = SigningKey.generate("lan")
    fresh = sign_fact(lan, "document.attested", {"sha256": "d1" * 32})
    forged = Envelope(
        fresh.payload_type, fresh.payload, (Signature(lan.keyid, stranger.sign(fresh.pae())),)
    )
    good = sign_fact(lan, "document.attested", {"sha256": "d2" * 32}).to_bytes()
    raws = [good, forged.to_bytes(), b'{"payloadType":']
    prepared = ledger.service.precheck(raws)
    assert isinstance(prepared[0], Fact) and prepared[0].signature_checked
    assert isinstance(prepared[1], Fact) and not prepared[1].signature_checked
    assert isinstance(prepared[2], MalformedFact)
    size = ledger.service.sealed.log_size()
    outcomes = ledger.service.submit_many(prepared)
    assert isinstance(outcomes[0], Appended) and outcomes[0].seq == size
    assert isinstance(outcomes[1], SignatureRefused)
    assert isinstance(outcomes[2], MalformedFact)
    assert ledger.service.sealed.log_size() == size + 1
    # a key the ledger does not know yet is checked under the lock, at its position
    khoa = SigningKey.generate("khoa")
    by_khoa = sign_fact(khoa, "document.attested", {"sha256": "d3" * 32}).to_bytes()
    prepared = ledger.service.precheck([_register(ledger.admin, khoa), by_khoa])
    assert isinstance(prepared[1], Fact) and not prepared[1].signature_checked
    outcomes = ledger.service.submit_many(prepared)
    assert all(isinstance(o, Appended) for o in outcomes), outcomes
