"""Attacks made directly in the database, behind the application's back (integrity.md §5).

Each attack runs on SQLite and on PostgreSQL, and each must be reported by ``verify`` — online
(reading the database) and offline (reading an export bundle taken after the attack) — at the
exact sequence number, with the right kind.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from conftest import Ledger

from domain.signed import stream_id
from ledger.checkpoints import InconsistentLogError
from ledger.export import export_bundle
from ledger.online import DatabaseSource, signer_state_root
from ledger.sealer import recorded_now
from signing.bundle import ExportSource
from signing.entry import encode_entry
from signing.facts import sign_fact
from signing.keys import SigningKey
from signing.merkle import CompactRange, leaf_hash
from signing.verify import Report, TrustedRoot, verify


def _both(ledger: Ledger, tmp_path: Path) -> tuple[Report, Report]:
    online = verify(DatabaseSource(ledger.service.sealed), ledger.log_keys, workers=1)
    bundle = tmp_path / "bundle"
    export_bundle(ledger.service.sealed, bundle)
    with ExportSource(bundle) as source:
        offline = verify(source, ledger.log_keys, workers=2)
    return online, offline


def _problems(report: Report) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in report.problems]


def _assert_found(ledger: Ledger, tmp_path: Path, expected: list[tuple[int, str]]) -> None:
    online, offline = _both(ledger, tmp_path)
    assert _problems(online) == expected, online.problems
    assert _problems(offline) == expected, offline.problems


def _event_id(ledger: Ledger, seq: int) -> int:
    return int(ledger.sql("SELECT notification_id FROM log_entries WHERE seq = %s", (seq,))[0][0])


@pytest.fixture
def sealed(ledger: Ledger) -> Ledger:
    """30 attestations after the 3 key registrations, sealed by a checkpoint of size 33."""
    ledger.attest("lan", 15)
    ledger.attest("minh", 15, start=100)
    ledger.checkpointer().checkpoint()
    return ledger


def test_untouched_log_verifies(sealed: Ledger, tmp_path: Path) -> None:
    online, offline = _both(sealed, tmp_path)
    assert online.ok and offline.ok
    assert online.size == offline.size == 33
    assert offline.signatures_checked == 33 and offline.authenticated_prefix == 33


def test_changed_payload(sealed: Ledger, tmp_path: Path) -> None:
    nid = _event_id(sealed, 10)
    state = bytes(
        sealed.sql(f"SELECT state FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))[0][
            0
        ]
    )
    envelope = json.loads(state)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["data"]["title"] = "Hồ sơ đã sửa"
    envelope["payload"] = base64.b64encode(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).decode()
    sealed.sql(
        f"UPDATE {sealed.events} SET state = %s WHERE {sealed.event_key()} = %s",
        (json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode(), nid),
    )
    _assert_found(sealed, tmp_path, [(10, "changed")])


def test_changed_metadata(sealed: Ledger, tmp_path: Path) -> None:
    sealed.sql(
        "UPDATE log_entries SET recorded_at = %s WHERE seq = 7", ("2020-01-01T00:00:00.000000Z",)
    )
    _assert_found(sealed, tmp_path, [(7, "changed")])


def test_deleted_entry_leaves_a_gap(sealed: Ledger, tmp_path: Path) -> None:
    nid = _event_id(sealed, 12)
    sealed.sql(f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))
    sealed.sql("DELETE FROM log_entries WHERE seq = 12")
    _assert_found(sealed, tmp_path, [(12, "deleted")])


def test_deleted_event_row_only(sealed: Ledger, tmp_path: Path) -> None:
    nid = _event_id(sealed, 5)
    sealed.sql(f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))
    _assert_found(sealed, tmp_path, [(5, "deleted")])


def test_deleted_and_renumbered(sealed: Ledger, tmp_path: Path) -> None:
    nid = _event_id(sealed, 20)
    sealed.sql(f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))
    sealed.sql("DELETE FROM log_entries WHERE seq = 20")
    sealed.sql("UPDATE log_entries SET seq = -seq WHERE seq > 20")
    sealed.sql("UPDATE log_entries SET seq = -seq - 1 WHERE seq < 0")
    online, offline = _both(sealed, tmp_path)
    for report in (online, offline):
        assert report.problems[0].seq == 20 and report.problems[0].kind == "deleted", report


def test_swapped_entries(sealed: Ledger, tmp_path: Path) -> None:
    a, b = _event_id(sealed, 8), _event_id(sealed, 25)
    sealed.sql("UPDATE log_entries SET notification_id = -1 WHERE seq = 8")
    sealed.sql("UPDATE log_entries SET notification_id = %s WHERE seq = 25", (a,))
    sealed.sql("UPDATE log_entries SET notification_id = %s WHERE seq = 8", (b,))
    _assert_found(sealed, tmp_path, [(8, "swapped"), (25, "swapped")])


def _insert_raw(ledger: Ledger, seq: int, envelope: bytes, nonce: str) -> None:
    """Append an event and its log row with a correct leaf hash, as an insider could."""
    stream = "0f0f0f0f-0000-4000-8000-000000000001"
    topic = "domain.attestations:Attestation.Attested"
    ledger.sql(
        f"INSERT INTO {ledger.events} (originator_id, originator_version, topic, state)"
        " VALUES (%s, %s, %s, %s)",
        (
            stream.replace("-", "") if ledger.database.backend == "sqlite" else stream,
            1,
            topic,
            envelope,
        ),
    )
    nid = int(ledger.sql(f"SELECT MAX({ledger.event_key()}) FROM {ledger.events}")[0][0])
    at = recorded_now()
    leaf = leaf_hash(encode_entry(seq, stream, 1, topic, at, envelope))
    ledger.sql(
        "INSERT INTO log_entries (seq, notification_id, recorded_at, leaf_hash, nonce)"
        " VALUES (%s, %s, %s, %s, %s)",
        (seq, nid, at, leaf, nonce),
    )


def test_forged_entry_inserted(sealed: Ledger, tmp_path: Path) -> None:
    forger = SigningKey.generate("lan")  # claims to be lan, with a key the log never saw
    env = sign_fact(forger, "document.attested", {"sha256": "ee" * 32})
    _insert_raw(sealed, 33, env.to_bytes(), "f" * 32)
    _assert_found(sealed, tmp_path, [(33, "inserted")])


def test_replayed_envelope_inserted(sealed: Ledger, tmp_path: Path) -> None:
    nid = _event_id(sealed, 9)
    state = bytes(
        sealed.sql(f"SELECT state FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))[0][
            0
        ]
    )
    _insert_raw(sealed, 33, state, "e" * 32)
    online, offline = _both(sealed, tmp_path)
    for report in (online, offline):
        assert _problems(report) == [(33, "inserted")]
        assert "replays the envelope of entry 9" in report.problems[0].detail


def test_signature_by_revoked_key(sealed: Ledger, tmp_path: Path) -> None:
    lan = sealed.users["lan"]
    revoked_at = sealed.service.submit(
        sign_fact(sealed.admin, "key.revoked", {"keyid": lan.keyid, "reason": "lost"}).to_bytes()
    ).seq
    late = sign_fact(lan, "document.attested", {"sha256": "dd" * 32})
    with pytest.raises(Exception, match="revoked"):
        sealed.service.submit(late.to_bytes())  # the ledger refuses it...
    _insert_raw(sealed, revoked_at + 1, late.to_bytes(), "d" * 32)  # ...an insider adds it
    _assert_found(sealed, tmp_path, [(revoked_at + 1, "revoked key")])


def test_truncated_and_rewritten_after_checkpoint(sealed: Ledger, tmp_path: Path) -> None:
    cut = 28
    ids = [_event_id(sealed, s) for s in range(cut, 33)]
    for nid in ids:
        sealed.sql(f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (nid,))
    sealed.sql("DELETE FROM log_entries WHERE seq >= %s", (cut,))
    for level in range(1, 7):  # every stored node that covers a removed leaf
        sealed.sql(
            "DELETE FROM log_nodes WHERE level = %s AND (idx + 1) * %s > %s", (level, 2**level, cut)
        )
    time.sleep(1.05)  # the rewrite happens after the checkpoint's (whole-second) time
    sealed.reopen()
    sealed.attest("minh", 8, start=500)  # re-appended through the application, validly signed
    with pytest.raises(InconsistentLogError):
        sealed.checkpointer().checkpoint()  # the ledger refuses to sign the fork
    _assert_found(sealed, tmp_path, [(cut, "forked")])


def test_truncated_tail(sealed: Ledger, tmp_path: Path) -> None:
    for s in range(30, 33):
        sealed.sql(
            f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (_event_id(sealed, s),)
        )
    sealed.sql("DELETE FROM log_entries WHERE seq >= 30")
    _assert_found(sealed, tmp_path, [(30, "deleted")])


def test_checkpoint_from_another_key_is_rejected(sealed: Ledger, tmp_path: Path) -> None:
    online, _ = _both(sealed, tmp_path)
    other = SigningKey.generate("kpi.test/ledger").verifier()
    report = verify(DatabaseSource(sealed.service.sealed), [other], workers=1)
    assert online.ok
    assert {p.kind for p in report.problems} == {"bad checkpoint"}


def test_many_altered_entries_are_each_reported(
    sealed: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signing.verify

    monkeypatch.setattr(signing.verify, "MAX_SWAP_SEARCH", 5)  # past the cap: no pairing
    sealed.sql(
        "UPDATE log_entries SET recorded_at = %s WHERE seq >= 3", ("2020-01-01T00:00:00.000000Z",)
    )
    _assert_found(sealed, tmp_path, [(s, "changed") for s in range(3, 33)])


@pytest.mark.parametrize(("a", "b"), [(8, 25), (8, 9), (3, 32)])
def test_rows_exchanged_with_their_seq(sealed: Ledger, tmp_path: Path, a: int, b: int) -> None:
    """``seq`` values exchanged: each row (event link, time, leaf hash, nonce) moves along."""
    sealed.sql("UPDATE log_entries SET seq = -1 WHERE seq = %s", (a,))
    sealed.sql("UPDATE log_entries SET seq = %s WHERE seq = %s", (a, b))
    sealed.sql("UPDATE log_entries SET seq = %s WHERE seq = -1", (b,))
    online, offline = _both(sealed, tmp_path)
    for report in (online, offline):
        assert _problems(report) == [(a, "swapped"), (b, "swapped")], report.problems
        assert [p.detail for p in report.problems] == [
            f"swapped with entry {b}",
            f"swapped with entry {a}",
        ]


def test_rows_exchanged_after_the_last_checkpoint(sealed: Ledger, tmp_path: Path) -> None:
    sealed.attest("lan", 6, start=300)  # entries 33..38, sealed by no checkpoint
    sealed.sql("UPDATE log_entries SET seq = -1 WHERE seq = 34")
    sealed.sql("UPDATE log_entries SET seq = 34 WHERE seq = 37")
    sealed.sql("UPDATE log_entries SET seq = 37 WHERE seq = -1")
    _assert_found(sealed, tmp_path, [(34, "swapped"), (37, "swapped")])


# -- the ledger's signer state (the home), against an insider who also deletes checkpoints --


def _rewrite_nodes(ledger: Ledger) -> None:
    """Recompute every stored Merkle node from the leaf hashes now in log_entries."""
    tree = CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for (leaf,) in ledger.sql("SELECT leaf_hash FROM log_entries ORDER BY seq"):
        nodes.extend(tree.append(bytes(leaf)))
    ledger.sql("DELETE FROM log_nodes")
    for level, idx, digest in nodes:
        ledger.sql(
            "INSERT INTO log_nodes (level, idx, hash) VALUES (%s, %s, %s)", (level, idx, digest)
        )


def _rewrite_entry(ledger: Ledger, seq: int) -> None:
    """Replace an entry's fact by another, validly signed (the insider holds lan's key) and
    filed in its own stream, with a matching leaf hash and nonce, consistent nodes, and no
    checkpoint left in the database."""
    forged = sign_fact(ledger.users["lan"], "document.attested", {"sha256": "ab" * 32})
    nonce = json.loads(forged.payload)["nonce"]
    stream = stream_id("attestation", nonce)
    ledger.sql(
        f"UPDATE {ledger.events} SET state = %s, originator_id = %s"
        f" WHERE {ledger.event_key()} = %s",
        (
            forged.to_bytes(),
            stream.hex if ledger.database.backend == "sqlite" else stream,
            _event_id(ledger, seq),
        ),
    )
    row = next(ledger.service.sealed.read_rows(seq, seq + 1))
    assert row.entry is not None
    ledger.sql(
        "UPDATE log_entries SET leaf_hash = %s, nonce = %s WHERE seq = %s",
        (leaf_hash(row.entry), nonce, seq),
    )
    _rewrite_nodes(ledger)
    ledger.sql("DELETE FROM log_checkpoints")


def _cli_verify(ledger: Ledger, home: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``kpi-ledger verify --db`` with this home: (exit status, standard output)."""
    from api.cli import main

    vkey = str(ledger.home.vkey_path)
    capsys.readouterr()
    argv = ["verify", "--db", ledger.database.url, "--home", str(home), "--log-key", vkey]
    code = main([*argv, "--workers", "1"])
    return code, capsys.readouterr().out


def test_signer_state_finds_a_rewrite_behind_deleted_checkpoints(
    sealed: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _rewrite_entry(sealed, 10)
    # The database alone no longer shows anything: signatures hold, claims match the entries.
    online, offline = _both(sealed, tmp_path)
    assert online.ok and offline.ok and online.checkpoints == []
    assert _cli_verify(sealed, tmp_path / "no-home", capsys)[0] == 0
    # The home remembers the size and root it signed.
    state = signer_state_root(sealed.home)
    assert state is not None and state.size == 33
    report = verify(DatabaseSource(sealed.service.sealed), sealed.log_keys, trusted=[state])
    assert _problems(report) == [(0, "forked")], report.problems
    assert "the ledger's signer state of size 33" in report.problems[0].detail
    code, out = _cli_verify(sealed, sealed.home.path, capsys)
    assert code == 1
    assert out.splitlines()[2].startswith("0\tforked\tthe log does not extend the ledger's signer")
    sealed.reopen()
    with pytest.raises(InconsistentLogError):
        sealed.checkpointer().checkpoint()  # the ledger itself refuses to sign on


def test_signer_state_finds_a_truncated_tail_behind_deleted_checkpoints(
    sealed: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for s in range(30, 33):
        sealed.sql(
            f"DELETE FROM {sealed.events} WHERE {sealed.event_key()} = %s", (_event_id(sealed, s),)
        )
    sealed.sql("DELETE FROM log_entries WHERE seq >= 30")
    _rewrite_nodes(sealed)
    sealed.sql("DELETE FROM log_checkpoints")
    assert _cli_verify(sealed, tmp_path / "no-home", capsys)[0] == 0
    code, out = _cli_verify(sealed, sealed.home.path, capsys)
    assert code == 1
    assert out.splitlines()[2] == (
        "30\tdeleted\tthe log has 30 entries but the ledger's signer state records a checkpoint"
        " of size 33: the tail was truncated"
    )


def test_signer_state_that_the_log_extends(
    sealed: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sealed.attest("minh", 4, start=700)  # the log grew past the last checkpoint
    code, out = _cli_verify(sealed, sealed.home.path, capsys)
    assert code == 0
    assert out.splitlines()[0] == (
        "OK: 37 entries, 37 signatures, 1 checkpoints verified (latest size 33)"
        " and the ledger's signer state (size 33)"
    )


def test_an_unreadable_signer_state_is_bad_input(
    sealed: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import main

    sealed.home.state_path.write_text('{"origin": "kpi.test/ledger", "size": 33}')  # no root
    argv = ["verify", "--db", sealed.database.url, "--home", str(sealed.home.path)]
    assert main([*argv, "--workers", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kpi-ledger verify: the ledger's signer state ")
    assert "signer-state.json is unreadable: KeyError('root')" in captured.err


def test_signer_state_that_disagrees_with_a_signed_checkpoint(sealed: Ledger) -> None:
    state = signer_state_root(sealed.home)
    assert state is not None
    other = TrustedRoot(state.origin, state.size, bytes(32), state.label)
    report = verify(DatabaseSource(sealed.service.sealed), sealed.log_keys, trusted=[other])
    assert [(p.seq, p.kind, p.detail) for p in report.problems] == [
        (33, "forked", "the ledger's signer state and the signed checkpoint of size 33 disagree")
    ]
    foreign = TrustedRoot("kpi.test/other", 30, state.root, state.label)
    report = verify(DatabaseSource(sealed.service.sealed), sealed.log_keys, trusted=[foreign])
    assert [p.kind for p in report.problems][:1] == ["bad checkpoint"]
    assert "several origins" in report.problems[0].detail
    sealed.sql("DELETE FROM log_checkpoints")
    report = verify(DatabaseSource(sealed.service.sealed), sealed.log_keys, trusted=[other])
    assert _problems(report) == [(0, "forked")]  # no signed checkpoint left to compare with
