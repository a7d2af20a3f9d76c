"""The application service: intake order is seal order; every refusal records nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey
from signing.verify import verify


@pytest.fixture
def service(db_url: str) -> LedgerService:
    app = LedgerService(parse_database(db_url))
    admin = SigningKey.generate("admin")
    app.bootstrap(SigningKey.generate("kpi.test/service"), admin)
    app.admin = admin  # type: ignore[attr-defined]
    return app


def _register(admin: SigningKey, key: SigningKey) -> bytes:
    return key_registration(admin, key.verifier(), admin=False).to_bytes()


def test_a_batch_is_sealed_in_the_order_it_was_checked(service: LedgerService) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan = SigningKey.generate("lan")
    batch = [
        _register(admin, lan),
        sign_fact(lan, "document.attested", {"sha256": "aa" * 32}).to_bytes(),
        sign_fact(admin, "key.revoked", {"keyid": lan.keyid, "reason": "left"}).to_bytes(),
        sign_fact(lan, "document.attested", {"sha256": "bb" * 32}).to_bytes(),
    ]
    outcomes = service.submit_many(batch)
    assert [o.seq for o in outcomes[:3]] == [1, 2, 3]  # type: ignore[union-attr]
    assert isinstance(outcomes[3], KeyRefused)
    report = verify(DatabaseSource(service.sealed), [], workers=1)
    assert report.problems == [] and report.signatures_checked == 4


def test_each_refusal_records_nothing(service: LedgerService) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan = SigningKey.generate("lan")
    service.submit(_register(admin, lan))
    good = sign_fact(lan, "document.attested", {"sha256": "aa" * 32})
    service.submit(good.to_bytes())
    size = service.sealed.log_size()
    stranger = SigningKey.generate("lan")
    fresh = sign_fact(lan, "document.attested", {"sha256": "dd" * 32})
    forged = Envelope(
        fresh.payload_type, fresh.payload, (Signature(lan.keyid, stranger.sign(fresh.pae())),)
    )
    reused_nonce = sign_fact(  # another fact under an used nonce
        lan, "document.attested", {"sha256": "ee" * 32}, nonce=json.loads(good.payload)["nonce"]
    )
    cases: list[tuple[bytes, type[Refusal]]] = [
        (reused_nonce.to_bytes(), ReplayRefused),
        (b'{"payloadType":', MalformedFact),
        (sign_fact(lan, "work.teleported", {}).to_bytes(), UnknownFactType),
        (sign_fact(lan, "document.attested", {"sha256": "zz"}).to_bytes(), InvalidFact),
        (sign_fact(stranger, "document.attested", {"sha256": "cc" * 32}).to_bytes(), KeyRefused),
        (forged.to_bytes(), SignatureRefused),
        (_register(lan, SigningKey.generate("minh")), InvalidFact),  # lan is no administrator
    ]
    for raw, error in cases:
        with pytest.raises(error) as caught:
            service.submit(raw)
        assert caught.value.rule and caught.value.detail
    assert service.sealed.log_size() == size


def test_the_same_envelope_again_gets_the_original_answer(service: LedgerService) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan = SigningKey.generate("lan")
    service.submit(_register(admin, lan))
    good = sign_fact(lan, "document.attested", {"sha256": "aa" * 32}).to_bytes()
    first = service.submit(good)
    size = service.sealed.log_size()
    again = service.submit(good)
    assert again.duplicate and not first.duplicate
    assert (again.seq, again.stream, again.version) == (first.seq, first.stream, first.version)
    assert service.sealed.log_size() == size


def test_key_rotation_through_the_service(service: LedgerService) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan, lan2 = SigningKey.generate("lan"), SigningKey.generate("lan")
    service.submit(_register(admin, lan))
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


def test_a_restarted_service_rebuilds_its_key_ring(
    db_url: str, service: LedgerService, tmp_path: Path
) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan = SigningKey.generate("lan")
    service.submit(_register(admin, lan))
    service.submit(sign_fact(admin, "key.revoked", {"keyid": lan.keyid, "reason": "x"}).to_bytes())
    service.close()
    again = LedgerService(parse_database(db_url))
    with pytest.raises(KeyRefused, match="revoked"):
        again.submit(sign_fact(lan, "document.attested", {"sha256": "aa" * 32}).to_bytes())
    again.close()


def test_the_key_scan_reads_only_what_is_new(service: LedgerService) -> None:
    admin: SigningKey = service.admin  # type: ignore[attr-defined]
    lan = SigningKey.generate("lan")
    service.submit(_register(admin, lan))
    service.submit_many(
        [sign_fact(lan, "document.attested", {"sha256": f"{i:064x}"}).to_bytes() for i in range(5)]
    )
    top = service.recorder.max_notification_id()
    assert service._cursor == top  # its own batches move the cursor: nothing to rescan
    other = LedgerService(parse_database(service.database.url))
    other.submit(sign_fact(lan, "document.attested", {"sha256": "ff" * 32}).to_bytes())
    service.refresh_keyring()
    assert service._cursor == top + 1  # another writer's entry was read once
    other.close()


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
