"""``kpi-ledger demo`` at a small scale, on both backends: the history verifies, holds every
kind of fact the issue names, matches the printed counts, is deterministic (the same seed gives
the same envelopes on SQLite and PostgreSQL), and bad input stores nothing."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from api.cli import main
from api.demo import VN, DemoError, DemoOptions, default_start, run_demo
from domain.service import LedgerService
from ledger.config import parse_database
from ledger.home import LedgerHome
from signing.canonical import parse_time
from signing.entry import decode_entry
from signing.facts import Fact, read_fact

SMALL = ["--employees", "12", "--months", "3", "--start", "2026-01"]  # March left open


def _demo(
    db_url: str, home: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["demo", "--db", db_url, "--home", str(home), *SMALL, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _printed_counts(out: str) -> dict[str, int]:
    lines = out.split("  facts by type:\n", 1)[1].splitlines()
    counts: dict[str, int] = {}
    for line in lines:
        match = re.fullmatch(r"    ([a-z_.]+) +([0-9,]+)", line)
        if match is None:
            break
        counts[match.group(1)] = int(match.group(2).replace(",", ""))
    return counts


def _log(db_url: str) -> list[tuple[int, bytes, Fact]]:
    """Every entry's position, envelope bytes and fact."""
    service = LedgerService(parse_database(db_url))
    try:
        out = []
        for row in service.sealed.read_rows():
            assert row.entry is not None
            envelope = decode_entry(row.entry).envelope
            out.append((row.seq, envelope, read_fact(envelope, strict=False)))
        return out
    finally:
        service.close()


def test_demo_history(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code, out, err = _demo(db_url, home, capsys, "--keys-out", str(tmp_path / "keys"))
    assert code == 0, err
    assert "(refusals: 0)" in out
    log = _log(db_url)
    entries = int(re.search(r"entries: +([0-9,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert entries == len(log)

    # The log verifies online and, exported, offline.
    assert main(["verify", "--db", db_url, "--home", str(home)]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {entries} entries")
    bundle = str(tmp_path / "bundle")
    assert main(["export", bundle, "--db", db_url]) == 0
    assert main(["verify", bundle, "--log-key", str(home / "log.vkey")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"OK: {entries} entries")

    # The counts printed are the counts in the log.
    counts = Counter(fact.type for _, _, fact in log)
    assert _printed_counts(out) == dict(counts)

    # Every kind of fact the issue names is there.
    for fact_type in (
        "key.registered",
        "org.unit_created",
        "role.granted",
        "policy.published",
        "catalogue.published",
        "employee.registered",
        "work.assigned",
        "work.declared",
        "work.approved",
        "work.rejected",
        "work.delayed",
        "work.quality_failed",
        "work.exemption_granted",
        "work.spot_checked",
        "survey.rated",
        "assessment.self_assessed",
        "assessment.supervisor_assessed",
        "score.adjustment_proposed",
        "score.adjustment_approved",
        "period.closed",
        "period.late_entry_requested",
        "period.late_entry_approved",
        "appeal.filed",
        "appeal.assigned",
        "appeal.decided",
        "appeal.withdrawn",
        "work.ruling_applied",
        "discipline.imposed",
        "discipline.annulled",
        "employee.transferred",
        "employee.leave_recorded",
        "hr.decision_proposed",
        "hr.decision_issued",
    ):
        assert counts[fact_type] >= 1, fact_type
    facts = [fact for _, _, fact in log]
    by_nonce = {fact.nonce: seq for seq, _, fact in log}

    # Appeals: both overturned and upheld rulings; the ledger derived one fact per ruling not
    # upheld, signed by its own key, right after the decision.
    rulings = Counter(
        r["ruling"] for f in facts if f.type == "appeal.decided" for r in f.data["rulings"]
    )
    assert rulings["overturned"] >= 1 and rulings["upheld"] >= 1
    for seq, _, fact in log:
        if fact.type != "appeal.decided":
            continue
        granted = [r for r in fact.data["rulings"] if r["ruling"] != "upheld"]
        derived = [f for _, _, f in log[seq + 1 : seq + 1 + len(granted)]]
        assert [f.actor for f in derived] == ["ledger"] * len(granted)
        assert [f.data["act"] for f in derived] == [r["act"] for r in granted]
        assert all(f.data["appeal"] == fact.data["appeal"] for f in derived)
    assert all(f.actor == "ledger" for f in facts if f.type.endswith(".ruling_applied"))

    # The single stories.
    leave = next(f for f in facts if f.type == "employee.leave_recorded")
    assert leave.data["kind"] == "maternity" and leave.data["start"][:7] != leave.data["end"][:7]
    assert next(f for f in facts if f.type == "discipline.imposed").data["level"] == "reprimand"
    late = [f for f in facts if f.type == "work.approved" and "late_entry" in f.data]
    assert len(late) == 1
    closes = {
        (f.data["agency"], f.data["period"]): by_nonce[f.nonce]
        for f in facts
        if f.type == "period.closed"
    }
    assert set(closes) == {
        (a, p) for a in ("KH-NT", "KH-SNV", "KH-STNMT") for p in ("2026-01", "2026-02")
    }  # the last month, 2026-03, is left open
    first_closes = [seq for (_, period), seq in closes.items() if period == "2026-01"]
    assert by_nonce[late[0].nonce] > max(first_closes)  # after the close
    issued = next(f for f in facts if f.type == "hr.decision_proposed")
    assert issued.data["kind"] == "reward" and issued.data["grounds"] == ["2026-01", "2026-02"]
    assert {f.data["agency"] for f in facts if f.type == "catalogue.published"} == {
        "KH-NT",
        "KH-SNV",
        "KH-STNMT",
    }
    scopes = {
        f.data["scope"]: f.data["document"]["id"] for f in facts if f.type == "policy.published"
    }
    assert scopes == {"KH": "vn-decree-335-2025", "KH-STNMT": "khanh-hoa-eoffice-kpi"}
    # A second version of the pack in force, published in the first month, from the second.
    versions = [
        (f.data["document"]["version"], f.data["document"]["effective_from"])
        for f in facts
        if f.type == "policy.published" and f.data["scope"] == "KH"
    ]
    assert versions == [(1, "2026-01-01"), (2, "2026-02-01")]
    # The docs' names: the first appeal is lan.nguyen's, against acts approved by tuan.tran.
    first_appeal = next(
        f for f in facts if f.type == "appeal.filed" and f.data["appeal"] == "KN-00001"
    )
    assert first_appeal.actor == "lan.nguyen"
    contested = [log[seq][2] for seq in first_appeal.data["contested"]]
    assert [f.type for f in contested] == ["work.rejected", "work.delayed"]
    assert contested[0].actor == "tuan.tran"

    # Employees sign their own facts with their own keys, written by --keys-out.
    employees = {f.data["employee"] for f in facts if f.type == "employee.registered"}
    assert len(employees) == 12
    declarers = {f.actor for f in facts if f.type == "work.declared"}
    assert declarers - {"motcua.nhatrang"} <= employees
    assert (tmp_path / "keys" / "an.pham.key").exists()
    assert all((tmp_path / "keys" / f"{e}.pub").exists() for e in employees)


def _envelopes(db_url: str) -> list[bytes]:
    return [envelope for _, envelope, _ in _log(db_url)]


def test_same_seed_same_envelopes(
    sqlite_url: str, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same seed on the two backends, another seed on SQLite: three demos."""
    third = f"sqlite:///{tmp_path / 'third.db'}"
    assert _demo(sqlite_url, tmp_path / "h1", capsys, "--seed", "7")[0] == 0
    assert _demo(pg_url, tmp_path / "h2", capsys, "--seed", "7")[0] == 0
    assert _demo(third, tmp_path / "h3", capsys, "--seed", "8")[0] == 0
    first, second, different = _envelopes(sqlite_url), _envelopes(pg_url), _envelopes(third)
    assert len(first) == len(second) and first == second
    assert sum(a == b for a, b in zip(first, different, strict=False)) == 0
    # The keys derived from the seed, the ledger's facts key among them; not the
    # checkpoint key.
    assert (tmp_path / "h1/facts.key").read_text() == (tmp_path / "h2/facts.key").read_text()
    assert (tmp_path / "h1/admin.key").read_text() == (tmp_path / "h2/admin.key").read_text()
    assert (tmp_path / "h1/ledger.key").read_text() != (tmp_path / "h2/ledger.key").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--employees", "0"], "--employees must be between 12 and"),
        (["--employees", "11"], "--employees must be between 12 and"),
        (["--months", "13"], "--months must be between 2 and 12"),
        (["--months", "1"], "--months must be between 2 and 12"),
        (["--start", "2026-13"], "--start must be a month written YYYY-MM"),
        (["--seed", "-1"], "--seed must be 0 or more"),
    ],
)
def test_bad_input_stores_nothing(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """Refused while reading the arguments, before any database is opened: the SQLite file
    (and the home) are never created."""
    home = tmp_path / "home"
    code = main(["demo", "--db", sqlite_url, "--home", str(home), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not home.exists()
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("home", "lies in the home"),
        ("home/keys", "lies in the home"),
        ("file", "file is not a directory"),
        ("file/keys", "file is not a directory"),
        ("full", "must be a new or empty directory"),
    ],
)
def test_a_bad_keys_out_stores_nothing(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, message: str
) -> None:
    """``--keys-out`` is checked and created before any database is opened: a clash with the
    home or a file in the way fails at once (not after the whole run), with nothing stored."""
    (tmp_path / "file").write_text("not a directory\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("taken\n")
    before = sorted(tmp_path.rglob("*"))
    keys_out = tmp_path / where
    code, out, err = _demo(sqlite_url, tmp_path / "home", capsys, "--keys-out", str(keys_out))
    assert code == 2, err
    assert err.startswith(f"kpi-ledger demo: --keys-out {keys_out}") and message in err
    assert out == ""
    assert sorted(tmp_path.rglob("*")) == before  # no home, no directory, no SQLite file


def test_an_existing_ledger_is_refused(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--db", db_url, "--home", str(tmp_path / "first")]) == 0
    before = _envelopes(db_url)
    keys = tmp_path / "new" / "keys"
    code, _, err = _demo(db_url, tmp_path / "second", capsys, "--keys-out", str(keys))
    assert code == 2
    assert "already holds a ledger; nothing was changed" in err
    assert _envelopes(db_url) == before
    assert not (tmp_path / "second").exists()
    assert not (tmp_path / "new").exists()  # the --keys-out directory made for the run
    # An initialised home is refused too, before the database is touched.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, _, err = _demo(fresh, tmp_path / "first", capsys)
    assert code == 2 and "already an initialised ledger home" in err
    assert not (tmp_path / "fresh.db").exists()


def test_a_refused_fact_fails_loudly(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """A generated fact the ledger refuses is a bug: the run stops with exit 1, naming it."""
    from api import demo

    monkeypatch.setattr(demo.History, "supervisor", lambda self, code, month: code)
    code, _, err = _demo(sqlite_url, tmp_path / "home", capsys)
    assert code == 1
    assert "refused a generated fact" in err and "fact: " in err


def _recorded(db_url: str) -> list[dt.datetime]:
    service = LedgerService(parse_database(db_url))
    try:
        return [
            parse_time(decode_entry(row.entry).recorded_at)
            for row in service.sealed.read_rows()
            if row.entry is not None
        ]
    finally:
        service.close()


def test_recorded_times_follow_the_story(tmp_path: Path) -> None:
    """The simulated calendar is the ledger's clock while seeding: each entry is recorded on
    the day its fact claims (a batch per day, at its newest fact's time), never earlier, and
    the recorded times never go back."""
    url = f"sqlite:///{tmp_path / 'past.db'}"
    database = parse_database(url)
    options = DemoOptions(employees=12, months=2, start="2025-05")
    run_demo(database, LedgerHome(tmp_path / "home"), options, progress=False)
    recorded = _recorded(url)
    log = _log(url)
    assert recorded == sorted(recorded)
    assert recorded[0] == dt.datetime(2025, 4, 1, 1, tzinfo=dt.UTC)  # 08:00 in Vietnam
    for when, (_, _, fact) in zip(recorded, log, strict=True):
        claimed = parse_time(fact.time)
        assert claimed <= when
        assert claimed.astimezone(VN).date() == when.astimezone(VN).date()
    # The open month's story ends on its 16th when it lies in the past.
    assert recorded[-1] < dt.datetime(2025, 6, 16, tzinfo=VN)
    assert recorded[-1] > dt.datetime(2025, 6, 5, tzinfo=VN)


@pytest.mark.parametrize("now", ["2026-03-20T03:00:00Z", "2026-04-01T00:30:00Z"])
def test_the_current_month_is_open(tmp_path: Path, now: str) -> None:
    """Without --start the history ends in the present's month, left open; the month before
    is closed with its appeal window still open: its close less than five days back, an
    appeal filed and still undecided within its deadline. Nothing is recorded after the
    present. Early on the 1st (Vietnam), the close and appeals fit in the hours since."""
    present = parse_time(now)
    url = f"sqlite:///{tmp_path / 'now.db'}"
    options = DemoOptions(employees=12, months=2, now=present)
    run_demo(parse_database(url), LedgerHome(tmp_path / "home"), options, progress=False)
    log = _log(url)
    facts = [fact for _, _, fact in log]
    recorded = _recorded(url)
    assert recorded == sorted(recorded) and recorded[-1] < present
    local = present.astimezone(VN)
    current = f"{local:%Y-%m}"
    previous = f"{(local.replace(day=1) - dt.timedelta(days=1)):%Y-%m}"
    assert previous in {f.data["period"] for f in facts if f.type == "work.assigned"}
    assert {f.data["period"] for f in facts if "period" in f.data} <= {previous, current}
    closes = [f for f in facts if f.type == "period.closed"]
    assert {f.data["period"] for f in closes} == {previous}
    assert all(present - dt.timedelta(days=4) < parse_time(f.time) < present for f in closes)
    decided = {f.data["appeal"] for f in facts if f.type in ("appeal.decided", "appeal.withdrawn")}
    open_appeals = [
        f for f in facts if f.type == "appeal.filed" and f.data["appeal"] not in decided
    ]
    assert open_appeals and all(
        present - parse_time(f.time) < dt.timedelta(days=4) for f in open_appeals
    )  # well within the ten working days the reviewer has
    assert any(f.type == "appeal.decided" for f in facts)


def test_a_start_in_the_future_is_refused(tmp_path: Path) -> None:
    options = DemoOptions(
        employees=12, months=3, start="2026-02", now=parse_time("2026-03-05T00:00:00Z")
    )
    with pytest.raises(DemoError, match="has not begun yet"):
        options.check()
    assert default_start(6, parse_time("2026-03-05T00:00:00Z")) == dt.date(2025, 10, 1)
    # The first two hours of a month (Vietnam) still count to the month before.
    assert default_start(2, parse_time("2026-02-28T18:00:00Z")) == dt.date(2026, 1, 1)
