"""``kpi-ledger score``, ``rebuild``, ``snapshot`` and ``show`` over a scenario 1 ledger."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import main
from tests.domain.test_scenarios import Month, ordinary_month
from tests.domain.world import LAN, MARCH, World


@pytest.fixture
def month(sqlite_url: str) -> Iterator[tuple[str, Month]]:
    w = World(sqlite_url)
    w.organise()
    w.employ(LAN)
    m = ordinary_month(w)
    w.service.close()
    yield sqlite_url, m


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code (argparse's own exit included), stdout and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_score_replays_the_month_with_its_trace(
    month: tuple[str, Month], capsys: pytest.CaptureFixture[str]
) -> None:
    url, m = month
    code, out, _ = run(capsys, "score", LAN, MARCH, "--db", url, "--trace")
    assert code == 0
    assert "= 89.42 -> good" in out and "[exact total 1073/12]" in out
    # what the unit view published for her: alone in her group, nobody is moved
    assert "\n  published: good\n" in out and "moved by the quota" not in out
    rejection = m.rejected[0].seq
    assert re.search(rf"^\s+{rejection}\s+work.rejected\s", out, re.M)
    code, out, _ = run(capsys, "score", LAN, MARCH, "--db", url, "--json")
    assert code == 0 and json.loads(out)["total"] == "1073/12"
    before = str(m.assessed.seq - 1)
    code, out, _ = run(capsys, "score", LAN, MARCH, "--db", url, "--diff-as-of", before)
    assert code == 0 and "grade: good -> completed" in out
    assert f"only in the first:  {m.assessed.seq} assessment.supervisor_assessed" in out
    assert "None" not in out  # an arithmetic line has no position: "-"
    assert re.search(r"^  only in the first:  - - total: total ", out, re.M)


def test_rebuild_snapshot_and_show(
    month: tuple[str, Month], capsys: pytest.CaptureFixture[str]
) -> None:
    url, m = month
    code, out, _ = run(capsys, "rebuild", "evaluations", "--db", url)
    assert code == 0 and out.strip() == f"rebuilt evaluations from {m.assessed.seq + 1} entries"
    code, out, _ = run(capsys, "snapshot", "KH-W1", MARCH, "--db", url)
    assert code == 0 and re.fullmatch(r"[0-9a-f]{64}\n", out)
    code, out, _ = run(capsys, "show", "unit", "--agency", "KH-W1", "--db", url)
    assert code == 0
    unit = json.loads(out)
    assert unit["results"][0]["total"] == "1073/12" and unit["distribution"]["good"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", LAN, "2026-13"], "is not a period"),
        (["score", LAN, "march"], "is not a period"),
        (["score", "nobody", MARCH], "no employee 'nobody'"),
        (["score", LAN, MARCH, "--as-of", "999999"], "position 999999 is not in the log"),
        (["score", LAN, MARCH, "--as-of", "yesterday"], "neither a log position nor an RFC 3339"),
        (["score", LAN, MARCH, "--policy", "7"], "has no version 7"),
        (["score", LAN, "2025-01"], "no posting or no policy"),
        (["show", "unit", "--agency", "KH-W1", "--period", MARCH, "--policy", "7"], "no version 7"),
        (["show", "score", "--employee", LAN, "--policy", "2"], "replay a unit view"),
        (["show", "unit", "--agency", "KH-W1", "--as-of", "2"], "replay a unit view"),
        (["snapshot", "KH-XX", MARCH], "no scores for agency 'KH-XX'"),
        (["rebuild", "scores"], "invalid choice"),
    ],
)
def test_bad_input_is_refused_with_exit_2(
    month: tuple[str, Month],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    url, m = month
    code, out, err = run(capsys, *argv, "--db", url)
    assert code == 2 and message in err and not out, err
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:  # nothing was appended
        assert db.execute("SELECT COUNT(*) FROM log_entries").fetchone() == (m.assessed.seq + 1,)


def test_a_missing_database_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    code, _, err = run(capsys, "score", LAN, MARCH, "--db", f"sqlite:///{path}")
    assert code == 2 and "no ledger at" in err
    assert not path.exists()


def test_show_unit_replayed_under_another_policy(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lan 95 and Mai 93: in force (fixed point) neither keeps excellent; under version 2
    (population, 0.5) Lan does. ``show unit --policy 2`` replays the unit; ``--diff-policy
    2`` sets now against it; the stored view stays as it was."""
    from tests.projections.test_views import month_for, policy_v2

    w = World(sqlite_url)
    w.organise()
    w.employ(LAN)
    w.employ("mai.tran")
    month_for(w, LAN, MARCH, "95")
    month_for(w, "mai.tran", MARCH, "93")
    w.do("admin", "policy.published", {"scope": "KH", "document": policy_v2()})
    w.service.close()
    where = ["--agency", "KH-W1", "--period", MARCH, "--db", sqlite_url]
    code, out, _ = run(capsys, "show", "unit", *where)
    assert code == 0
    stored = json.loads(out)
    assert stored["quota"][0]["allowed"] == 0
    code, out, _ = run(capsys, "show", "unit", *where, "--policy", "2")
    assert code == 0
    other = json.loads(out)
    assert other["policy"] == "vn-decree-335-2025@2"
    assert (other["quota"][0]["allowed"], other["quota"][0]["kept"]) == (1, [LAN])
    code, out, _ = run(capsys, "show", "unit", *where, "--diff-policy", "2")
    assert code == 0
    doc = json.loads(out)
    assert doc["result"] == stored and doc["other"] == other
    lan = next(r for r in doc["diff"]["rows"] if r["employee"] == LAN)
    assert (lan["before"]["grade"], lan["after"]["grade"]) == ("good", "excellent")
    [side] = doc["diff"]["quota"]
    assert (side["before"]["allowed"], side["after"]["allowed"]) == (0, 1)
    assert (side["before"]["cut_off"], side["after"]["cut_off"]) == (None, "95")
    code, out, _ = run(capsys, "show", "unit", *where)
    assert code == 0 and json.loads(out) == stored
