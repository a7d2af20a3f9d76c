"""Scenario 5 of scenarios.md: integrity under attack, at 10,000 events, on both backends.

The evaluation facts (approvals, declarations) arrive with the domain issue; here every fact
is a signed document attestation, which exercises the same signing, sealing and verifying.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import Ledger

from ledger.export import export_bundle
from signing.bundle import ExportSource
from signing.checkpoint import verify_checkpoint
from signing.errors import ProofError
from signing.facts import sign_fact
from signing.merkle import leaf_hash, verify_inclusion
from signing.verify import verify

TOTAL = 10_000
REVOKED_AT = 5_000


def _fill(ledger: Ledger, user: str, until: int, start: int) -> None:
    size = ledger.service.sealed.log_size()
    n = 0
    while size < until:
        batch = [
            sign_fact(
                ledger.users[user], "document.attested", {"sha256": f"{start + n + i:064x}"}
            ).to_bytes()
            for i in range(min(1000, until - size))
        ]
        outcomes = ledger.service.submit_many(batch)
        assert all(hasattr(o, "seq") for o in outcomes)
        n += len(batch)
        size += len(batch)


def test_scenario_5_integrity_under_attack(ledger: Ledger, tmp_path: Path) -> None:
    minh = ledger.users["minh"]
    _fill(ledger, "minh", REVOKED_AT, 0)  # entries 3..4999 signed by minh
    revocation = ledger.service.submit(
        sign_fact(ledger.admin, "key.revoked", {"keyid": minh.keyid, "reason": "left"}).to_bytes()
    )
    assert revocation.seq == REVOKED_AT
    late = sign_fact(minh, "document.attested", {"sha256": "77" * 32}).to_bytes()
    with pytest.raises(Exception, match="revoked at position 5000"):
        ledger.service.submit(late)
    _fill(ledger, "lan", TOTAL, 100_000)
    before = ledger.checkpointer().checkpoint()
    assert before.checkpoint.size == TOTAL

    # The writer of entry 1234 kept its receipt (inclusion proof) and its exact bytes.
    changed, deleted, swap_a, swap_b = 1234, 4321, 6000, 8000
    original = next(ledger.service.sealed.read_rows(changed, changed + 1)).entry
    assert original is not None
    proof = ledger.service.sealed.inclusion_proof(changed, TOTAL)

    # The attack, straight in the database.
    ev, key = ledger.events, ledger.event_key()

    def nid(seq: int) -> int:
        return int(
            ledger.sql("SELECT notification_id FROM log_entries WHERE seq = %s", (seq,))[0][0]
        )

    state = bytes(ledger.sql(f"SELECT state FROM {ev} WHERE {key} = %s", (nid(changed),))[0][0])
    envelope = json.loads(state)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["data"]["sha256"] = "00" * 32
    envelope["payload"] = base64.b64encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    ledger.sql(
        f"UPDATE {ev} SET state = %s WHERE {key} = %s",
        (json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode(), nid(changed)),
    )
    ledger.sql(f"DELETE FROM {ev} WHERE {key} = %s", (nid(deleted),))
    ledger.sql("DELETE FROM log_entries WHERE seq = %s", (deleted,))
    a, b = nid(swap_a), nid(swap_b)
    ledger.sql("UPDATE log_entries SET notification_id = -1 WHERE seq = %s", (swap_a,))
    ledger.sql("UPDATE log_entries SET notification_id = %s WHERE seq = %s", (a, swap_b))
    ledger.sql("UPDATE log_entries SET notification_id = %s WHERE seq = %s", (b, swap_a))

    # The inspector verifies an export, offline, with the ledger's published key.
    bundle = tmp_path / "bundle.tar.gz"
    export_bundle(ledger.service.sealed, bundle)
    with ExportSource(bundle) as source:
        report = verify(source, ledger.log_keys, workers=2)
    assert [(p.seq, p.kind) for p in report.problems] == [
        (changed, "changed"),
        (deleted, "deleted"),
        (swap_a, "swapped"),
        (swap_b, "swapped"),
    ], report.problems
    assert report.signatures_checked >= TOTAL - 4

    # The checkpoint signed before the attack proves the original entry, and not the forgery.
    signed = verify_checkpoint(before.note, ledger.log_keys)
    verify_inclusion(leaf_hash(original), changed, TOTAL, proof, signed.checkpoint.root)
    tampered = next(ledger.service.sealed.read_rows(changed, changed + 1)).entry
    assert tampered is not None and tampered != original
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(tampered), changed, TOTAL, proof, signed.checkpoint.root)
