"""The command line itself: a parser that imports nothing heavy, ``--version``, an example in
every command's help, ``sign --time`` and the time window's refusal, and ``close``."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import api.cli.views
from api.cli import build_parser, main
from api.cli.common import PERIOD_PATTERN, PROJECTIONS, VIEWS
from signing.dsse import Envelope
from signing.keys import write_key_pair
from tests.domain.test_scenarios import ordinary_month
from tests.domain.world import LAN, MARCH, World

HEAVY = {
    "fastapi",
    "uvicorn",
    "psycopg",
    "eventsourcing",
    "cryptography",
    "pydantic",
    "projections",
    "domain",
    "ledger",
    "signing",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code (argparse's own exit included), stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _commands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


# -- the parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["close", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    """Whole process: what is in sys.modules once the parser has answered."""
    program = (
        "import sys\n"
        "from api.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY)!r})\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert done.stderr == "[]"
    assert done.stdout.startswith("usage: kpi-ledger" if "--help" in argv else "kpi-ledger ")


def test_the_parser_s_copies_equal_their_sources() -> None:
    from domain.schemas import PERIOD_PATTERN as SOURCE
    from projections.engine import VIEWS as SOURCE_VIEWS
    from projections.runners import PROJECTIONS as SOURCE_PROJECTIONS

    assert (PERIOD_PATTERN, VIEWS, PROJECTIONS) == (SOURCE, SOURCE_VIEWS, SOURCE_PROJECTIONS)


def test_version_is_the_package_s(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"kpi-ledger {version('kpi-ledger')}\n"


def test_every_command_s_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands()
    assert len(commands) == 20 and "close" in commands
    for command in commands:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0, command
        example = out.split("\nexample:\n", 1)
        assert len(example) == 2, f"{command}: no example"
        assert f"  kpi-ledger {command} " in example[1], command
    code, out, _ = run(capsys, "--help")
    assert "example" in out and "kpi-ledger score lan.nguyen 2026-03" in out


def test_the_examples_name_people_and_agencies_of_the_demo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo's names the examples use, against the generator's own."""
    from api import demo

    text = "".join(run(capsys, c, "--help")[1] for c in _commands())
    source = Path(demo.__file__).read_text(encoding="utf-8")
    for name in ("lan.nguyen", "tuan.tran", "hoa.tran", "KH-NT"):
        assert name in text and f'"{name}' in source, name
    assert "KH-W1" not in text  # the tests' world, not the demo


# -- sign --time and the window -------------------------------------------------------------


@pytest.fixture
def ledger(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KPI_LEDGER_DB", sqlite_url)
    monkeypatch.setenv("KPI_LEDGER_HOME", str(tmp_path / "home"))
    for name in ("KPI_LEDGER_MAX_BACKDATE", "KPI_LEDGER_MAX_AHEAD"):
        monkeypatch.delenv(name, raising=False)
    assert main(["init", "--origin", "kpi.test/cli"]) == 0
    assert main(["keygen", "lan", "--out", "keys"]) == 0
    assert main(["register-key", "lan", "keys/lan.pub"]) == 0
    Path("f.json").write_text(
        json.dumps({"type": "document.attested", "data": {"sha256": "ab" * 32}})
    )
    return tmp_path


def test_sign_time_sets_the_claimed_time_and_the_window_names_its_settings(
    ledger: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    code, out, _ = run(capsys, "sign", "keys/lan.key", "f.json", "--time", "2026-03-19T03:00:00Z")
    assert code == 0
    payload = json.loads(Envelope.parse(out.strip()).payload)
    assert payload["time"] == "2026-03-19T03:00:00Z"
    Path("old.jsonl").write_text(out)
    code, out, err = run(capsys, "append", "old.jsonl")
    assert code == 1 and out == ""
    assert "[time.out_of_window]" in err and "claims 2026-03-19T03:00:00Z" in err
    assert "KPI_LEDGER_MAX_BACKDATE" in err and "KPI_LEDGER_MAX_AHEAD" in err
    # the setting it names widens the window: the same envelope is accepted
    monkeypatch.setenv("KPI_LEDGER_MAX_BACKDATE", "800d")
    code, out, err = run(capsys, "append", "old.jsonl")
    assert (code, out, err) == (0, "3\n", "")


@pytest.mark.parametrize(
    "bad", ["2026-03-19T03:00:00", "2026-03-19T03:00:00+07:00", "2026-02-30T03:00:00Z", "now"]
)
def test_sign_refuses_a_time_that_is_not_utc_rfc3339(
    ledger: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    capsys.readouterr()
    code, out, err = run(capsys, "sign", "keys/lan.key", "f.json", "--time", bad)
    assert code == 2 and out == ""
    assert "--time" in err and repr(bad) in err


# -- close ----------------------------------------------------------------------------------


@pytest.fixture
def month(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Scenario 1's March at KH-W1, with the HR officer's and the administrator's key files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KPI_LEDGER_DB", sqlite_url)
    monkeypatch.setenv("KPI_LEDGER_HOME", str(tmp_path / "home"))
    w = World(sqlite_url)
    w.organise()
    w.employ(LAN)
    ordinary_month(w)
    w.service.close()
    for name in ("hoa.hr", "admin"):
        write_key_pair(w.keys[name], tmp_path / "keys")
    yield sqlite_url


def _log_size(url: str) -> int:
    from domain.service import LedgerService
    from ledger.config import parse_database

    service = LedgerService(parse_database(url))
    try:
        return service.sealed.log_size()
    finally:
        service.close()


def _snapshot_doc(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, _ = run(capsys, "show", "snapshot", "--agency", "KH-W1", "--period", MARCH)
    assert code == 0
    (doc,) = [json.loads(line) for line in out.splitlines()]
    assert isinstance(doc, dict)
    return doc


def test_close_signs_the_snapshot_the_views_recompute(
    month: str, capsys: pytest.CaptureFixture[str]
) -> None:
    size = _log_size(month)
    code, expected, _ = run(capsys, "snapshot", "KH-W1", MARCH)
    assert code == 0
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key", "--yes")
    assert code == 0, err
    assert out == f"{size}\tperiod.closed KH-W1 {MARCH} snapshot {expected.strip()}\n"
    assert f"close KH-W1 {MARCH}, signed by hoa.hr" in err
    assert "1 people (good 1)" in err and f"before position {size}" in err
    doc = _snapshot_doc(capsys)
    assert doc["close_seq"] == size and doc["closed_by"] == "hoa.hr"
    assert doc["recorded"] == doc["computed"] == expected.strip() and doc["matches"] is True

    # the same period again: refused, the rule in words, nothing recorded
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key", "--yes")
    assert code == 1 and out == ""
    assert "[state.invalid]" in err and "is already closed" in err
    assert f"KH-W1 {MARCH} was not closed: a period closes once" in err
    assert _log_size(month) == size + 1


def test_close_asks_and_without_a_terminal_refuses_unless_yes(
    month: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    size = _log_size(month)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key")
    assert code == 2 and out == ""
    assert "stdin is not a terminal" in err and "--yes" in err and "snapshot" in err
    assert _log_size(month) == size

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key")
    assert (code, out) == (1, "") and "not signed" in err
    assert _log_size(month) == size
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key")
    assert code == 0 and out.startswith(f"{size}\tperiod.closed")


def test_close_computes_again_when_another_entry_lands_first(
    month: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry lands between the snapshot and the submission: the close is not recorded
    at the wrong position; it is computed again and lands right after the new head."""
    computed = api.cli.views.close_snapshot
    calls: list[int] = []
    monkeypatch.setattr(api.cli.views, "CLOSE_PAUSE", 0.0)

    def racing(database: Any, agency: str, period: str) -> dict[str, Any]:
        published = computed(database, agency, period)
        calls.append(published["before"])
        if len(calls) == 1:  # another writer gets in first
            assert main(["keygen", "late", "--out", "keys"]) == 0
            assert (
                main(["register-key", "late", "keys/late.pub", "--admin-key", "keys/admin.key"])
                == 0
            )
        return published

    monkeypatch.setattr(api.cli.views, "close_snapshot", racing)
    size = _log_size(month)
    capsys.readouterr()
    code, out, err = run(capsys, "close", "KH-W1", MARCH, "--key", "keys/hoa.hr.key", "--yes")
    assert code == 0, err
    assert calls == [size, size + 1]
    assert f"another entry landed before position {size}" in err
    # (the racing writer's own output first)
    assert out.splitlines()[-1].startswith(f"{size + 1}\tperiod.closed KH-W1 {MARCH} snapshot ")
    doc = _snapshot_doc(capsys)
    assert doc["close_seq"] == size + 1 and doc["matches"] is True
