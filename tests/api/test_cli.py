"""The command line, on both backends: the happy path, and bad input refused with nothing stored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from api.cli import main
from ledger.config import parse_database
from ledger.sqlite import SealedSQLiteRecorder
from signing.receipt import TlogProof


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KPI_LEDGER_DB", db_url)
    monkeypatch.setenv("KPI_LEDGER_HOME", str(tmp_path / "home"))
    assert main(["init", "--origin", "kpi.test/cli"]) == 0
    assert main(["keygen", "lan", "--out", "keys"]) == 0
    assert main(["register-key", "lan", "keys/lan.pub"]) == 0
    return tmp_path


def _size(db_url: str) -> int:
    from domain.service import LedgerService

    service = LedgerService(parse_database(db_url))
    try:
        return service.sealed.log_size()
    finally:
        service.close()


def _sign(capsys: pytest.CaptureFixture[str], data: dict[str, object], name: str = "f.json") -> str:
    Path(name).write_text(json.dumps({"type": "document.attested", "data": data}))
    capsys.readouterr()
    assert main(["sign", "keys/lan.key", name]) == 0
    return capsys.readouterr().out


def test_full_cycle(cli: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = "".join(_sign(capsys, {"sha256": f"{i:064x}"}, f"f{i}.json") for i in range(3))
    Path("envs.jsonl").write_text(lines)
    assert main(["append", "envs.jsonl"]) == 0
    assert capsys.readouterr().out.split() == ["3", "4", "5"]  # 0 admin, 1 ledger, 2 lan
    assert main(["checkpoint"]) == 0
    note = capsys.readouterr().out
    assert note.startswith("kpi.test/cli\n6\n")
    assert main(["receipt", "3"]) == 0
    receipt = capsys.readouterr().out
    assert TlogProof.parse(receipt).index == 3
    assert main(["export", "bundle"]) == 0
    capsys.readouterr()
    # The exact entry bytes from the bundle, checked against the receipt offline.
    line = Path("bundle/entries.jsonl").read_text().splitlines()[3]
    import base64

    Path("entry3.bin").write_bytes(base64.b64decode(json.loads(line)["entry"]))
    Path("entry3.tlog-proof").write_text(receipt)
    assert (
        main(["verify-receipt", "entry3.tlog-proof", "entry3.bin", "--log-key", "home/log.vkey"])
        == 0
    )
    assert "entry 3 is in the log of size 6" in capsys.readouterr().out
    assert main(["verify", "bundle", "--log-key", "home/log.vkey"]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 entries")
    assert main(["verify"]) == 0


def test_bad_lines_are_refused_alone_and_a_repeat_gets_its_first_answer(
    cli: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _sign(capsys, {"sha256": "aa" * 32})
    bad = _sign(capsys, {"sha256": "not hex"}, "bad.json")
    Path("envs.jsonl").write_text(good + bad + good + "not json\n")
    assert main(["append", "envs.jsonl"]) == 1
    captured = capsys.readouterr()
    assert captured.out.split() == ["3", "3"]  # the repeated envelope: its original position
    assert "line 2: refused [fact.invalid]" in captured.err
    assert "line 3: already recorded at 3" in captured.err
    assert "line 4: refused [envelope.malformed]" in captured.err
    assert _size(db_url) == 4


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["init"], "already holds a ledger"),
        (["keygen", "lan", "--out", "keys"], "refusing to overwrite"),
        (["register-key", "minh", "keys/lan.pub"], "not 'minh'"),
        (["receipt", "99"], "not sealed by a checkpoint"),
        (["verify", "keys", "--log-key", "home/log.vkey"], "not an export bundle"),
        (["verify", "keys"], "needs --log-key"),
        (["--db", "mysql://x/y", "verify"], "unsupported database URL"),
        (["sign", "keys/lan.key", "missing.json"], "missing.json"),
        (["register-key", "lan", "keys"], "keys"),
        (["register-key", "lan", "home/log.vkey"], "one key at a time"),
        (["append", "keys"], "keys"),
    ],
)
def test_bad_usage_exits_2_and_stores_nothing(
    cli: Path, db_url: str, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _size(db_url)
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert _size(db_url) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["append", "x.jsonl", "--checkpoint-every", "-3"],
        ["checkpoint", "--every-seconds", "0"],
        ["checkpoint", "--every-seconds", "nan"],
        ["verify", "--workers", "0"],
    ],
)
def test_bad_numbers_are_refused_by_the_parser(
    cli: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and "must be" in capsys.readouterr().err


@pytest.mark.parametrize(("admin", "words"), [("a b", "spaces"), ("ledger", "ledger.key")])
def test_init_checks_the_administrator_before_writing_anything(
    tmp_path: Path, admin: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    argv = ["--db", f"sqlite:///{tmp_path / 'l.db'}", "--home", str(home), "init"]
    assert main([*argv, "--admin", admin]) == 2
    assert words in capsys.readouterr().err
    assert not home.exists()
    assert main(argv) == 0  # nothing was left behind to block a retry


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"type": "document.attested", "data": {"score": 89.5}}, "floating-point"),
        ({"type": "document.attested", "data": {"at": "2026-03-05T08:00:00"}}, "naive"),
        ({"type": "document.attested", "data": {"n": 2**60}}, "beyond"),
        ({"type": "document.attested", "data": {}, "nonce": "x"}, "unexpected fields"),
        ({"data": {}}, '{"type"'),
    ],
)
def test_sign_refuses_unsignable_payloads(
    cli: Path, payload: dict[str, object], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("p.json").write_text(json.dumps(payload))
    capsys.readouterr()
    assert main(["sign", "keys/lan.key", "p.json"]) == 2
    assert words in capsys.readouterr().err


def test_verify_with_a_foreign_log_key_fails(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "kpi.test/cli", "--out", "other"]) == 0
    assert main(["export", "bundle"]) == 0
    capsys.readouterr()
    assert main(["verify", "bundle", "--log-key", "other/kpi.test_cli.pub"]) == 1
    assert "bad checkpoint" in capsys.readouterr().out


def test_revoke_key_then_signing_is_refused(
    cli: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from signing.keys import read_signing_key

    keyid = read_signing_key(Path("keys/lan.key")).keyid
    assert main(["revoke-key", keyid, "--reason", "laptop lost"]) == 0
    Path("envs.jsonl").write_text(_sign(capsys, {"sha256": "bb" * 32}))
    assert main(["append", "envs.jsonl"]) == 1
    assert "revoked at position 3" in capsys.readouterr().err
    assert _size(db_url) == 4


def test_checkpoint_every_n_entries(
    cli: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = "".join(_sign(capsys, {"sha256": f"{i:064x}"}, f"f{i}.json") for i in range(5))
    Path("envs.jsonl").write_text(lines)
    assert main(["append", "envs.jsonl", "--checkpoint-every", "3"]) == 0
    from domain.service import LedgerService

    service = LedgerService(parse_database(db_url))
    try:
        sizes = [cp.size for cp in service.sealed.checkpoints()]
    finally:
        service.close()
    assert sizes == [2, 8]  # init's checkpoint, then one once >= 3 new entries had arrived


def test_sqlite_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KPI_LEDGER_DB", raising=False)
    monkeypatch.delenv("KPI_LEDGER_HOME", raising=False)
    assert main(["init"]) == 0
    assert (tmp_path / ".kpi-ledger/ledger.key").exists()
    from domain.service import LedgerService

    service = LedgerService(parse_database(f"sqlite:///{tmp_path / 'kpi-ledger.db'}"))
    try:  # the default file holds a sealed log: entries 0, 1 and the first checkpoint
        assert isinstance(service.sealed, SealedSQLiteRecorder)
        assert service.sealed.log_size() == 2  # the administrator and the ledger keys
        assert [c.size for c in service.sealed.checkpoints()] == [2]
    finally:
        service.close()


def test_verify_receipt_fails_with_exit_1_for_the_wrong_entry(
    cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("envs.jsonl").write_text(_sign(capsys, {"sha256": "cc" * 32}))
    assert main(["append", "envs.jsonl"]) == 0
    assert main(["checkpoint"]) == 0
    capsys.readouterr()
    assert main(["receipt", "2"]) == 0
    Path("r.tlog-proof").write_text(capsys.readouterr().out)
    # entry 2 as a forger would hand it over: the right position, another recording time
    from domain.service import LedgerService

    service = LedgerService(parse_database(os.environ["KPI_LEDGER_DB"]))
    try:
        entry = service.sealed.read_rows(2, 3).__next__().entry
    finally:
        service.close()
    assert entry is not None and b'"recorded_at":"20' in entry
    Path("wrong.bin").write_bytes(entry.replace(b'"recorded_at":"20', b'"recorded_at":"19', 1))
    assert main(["verify-receipt", "r.tlog-proof", "wrong.bin", "--log-key", "home/log.vkey"]) == 1
    assert "FAILED" in capsys.readouterr().out
    # and bytes that are no entry at all are bad input, not an integrity failure
    Path("junk.bin").write_bytes(b"not the entry")
    assert main(["verify-receipt", "r.tlog-proof", "junk.bin", "--log-key", "home/log.vkey"]) == 2


def test_checkpoint_on_an_empty_ledger_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KPI_LEDGER_DB", f"sqlite:///{tmp_path}/x.db")
    from ledger.home import LedgerHome

    LedgerHome(tmp_path / ".kpi-ledger").create("kpi.test/empty")
    assert main(["checkpoint"]) == 2
    assert "nothing to seal" in capsys.readouterr().err


def test_progress_bar_on_request(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "bundle", "--progress"]) == 0
    assert "export [" in capsys.readouterr().err
    assert main(["verify", "bundle", "--log-key", "home/log.vkey", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "verify [" in captured.err and captured.out.startswith("OK")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite:////nonexistent/dir/ledger.db", "cannot use the database"),
        ("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", "cannot use the database"),
    ],
)
def test_an_unusable_database_is_a_clear_error(
    url: str,
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--db", url, "init"]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / ".kpi-ledger").exists()  # nothing was created


def test_receipt_of_a_negative_position(cli: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["receipt", "--", "-1"]) == 2
    assert "0 or more" in capsys.readouterr().err
