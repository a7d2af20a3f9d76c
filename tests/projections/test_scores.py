"""Scenarios 1-4 of ``../shared/spec/scenarios.md`` through the projections, on both backends.

The stories are recorded with the helpers of ``tests/domain/test_scenarios.py``; the numbers
are read back from the read models (``Evaluations`` folding the log into views, caught up
several times along each story) and recomputed from the log itself (``Replay``), which must
agree with each other and with a full rebuild.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Any

from domain.policy import Policy
from domain.publications import PolicyBook
from domain.service import Appended
from ledger.config import parse_database
from projections.engine import Evaluations, snapshot_hash
from projections.replay import Replay
from projections.runners import rebuild
from projections.score import Line, Result, diff, exact, show
from tests.domain.test_scenarios import (
    CRITERIA,
    ITEMS,
    Month,
    assess,
    assign,
    bounded_adjustment,
    close,
    declare,
    ordinary_month,
)
from tests.domain.world import LAN, MARCH, World, at, sha

POLICY = "vn-decree-335-2025@1"
KEY = f"{LAN}/{MARCH}"
YEAR = f"{LAN}/2026"
TOTALS: tuple[str, ...] = ("72.4", "68.0", "75.5", "80.1", "70.0", "66.3", "74.8", "71.9")
TOTALS += ("69.5", "73.2", "77.0", "76.1")  # the twelve months of scenario 4
VIEWS: tuple[str, ...] = ("score", "trace", "quarter", "year", "unit", "snapshot", "appeal")
VIEWS += ("hr_due", "flag", "evidence", "approvals")
REPRIMAND = {
    "discipline": "kt-1",
    "employee": LAN,
    "level": "reprimand",
    "decided_on": "2026-09-10",
    "legal_basis": "Nghị định 172/2025/NĐ-CP",
    "reason": "vi phạm quy chế",
}


# -- fixtures and helpers --------------------------------------------------------------------


def doc_of(ev: Evaluations, view: str, key: str) -> dict[str, Any]:
    found = ev.view.doc(view, key)
    assert found is not None, f"no {view} document {key}"
    return found


def scored(ev: Evaluations, key: str = KEY) -> Result:
    """The score view's result for ``key`` (``employee/period``), with the trace view's
    lines."""
    return Result.from_doc(doc_of(ev, "score", key), doc_of(ev, "trace", key)["trace"])


def replayed(ev: Evaluations, as_of: int | str | None = None, period: str = MARCH) -> Result:
    return Replay(ev.view).score(LAN, period, as_of=as_of)


def without_trace(result: Result) -> dict[str, Any]:
    doc = result.to_doc()
    del doc["trace"]
    return doc


def same(a: Result, b: Result) -> None:
    """Two results agree on every component and on every line of the trace."""
    assert without_trace(a) == without_trace(b)
    assert list(a.trace) == list(b.trace)


def lines_at(result: Result, seq: int) -> list[Line]:
    return [x for x in result.trace if x.seq == seq]


def line_for(result: Result, act: Appended, fact: str, subject: str | None = None) -> Line:
    """The one trace line of the fact recorded at ``act.seq`` (of type ``fact``)."""
    found = [x for x in lines_at(result, act.seq) if x.fact == fact]
    assert len(found) == 1, (act.seq, fact, lines_at(result, act.seq))
    if subject is not None:
        assert found[0].subject == subject, found[0]
    return found[0]


def check_components(result: Result, total: Fraction, grade: str, qcp: Sequence[str]) -> None:
    assert result.total == total, show(result.total, 4)
    assert result.grade == result.points_grade == grade
    assert [Fraction(x) for x in qcp] == [result.Q, result.C, result.P]


def all_views(ev: Evaluations) -> dict[str, dict[str, Any]]:
    """Every document of the views that follow from the log, by view and key, and every
    sheet's stored rows (as ``sheet``, by subject)."""
    views: dict[str, dict[str, Any]] = {v: ev.view.docs(v, ev.view.keys(v)) for v in VIEWS}
    views["sheet"] = {s: ev.view.sheet_rows(s) for s in ev.view.sheet_subjects()}
    return views


def check_refolds(db_url: str, ev: Evaluations, step: int = 7) -> None:
    """The views ``ev`` built incrementally come out the same from a full rebuild, and from
    folding the log again in batches of ``step``, each by a new projection that resumes from
    the tracking position."""
    views = all_views(ev)
    assert rebuild(parse_database(db_url)) == ev.seq + 1
    assert all_views(ev) == views
    ev.view.clear()
    while Evaluations(ev.view).catch_up(limit=step):
        pass
    assert all_views(ev) == views


def policy_in_force(w: World, day: dt.date) -> Policy:
    found: Policy = w.get(PolicyBook.id_for("KH")).in_force(day)
    return found


# -- scenario 1 ------------------------------------------------------------------------------


def check_ordinary_month(w: World, m: Month, result: Result) -> None:
    check_components(result, Fraction(1073, 12), "good", ("95", "94.375", "93.125"))
    assert show(result.total, 4) == "89.4167" and show(result.total) == "89.42"
    assert result.general == Fraction("23.5") and result.task == Fraction(791, 12)
    assert (result.assigned, result.done) == (Fraction(40), Fraction(38))
    for appended, item in zip(m.assigned, ITEMS, strict=True):
        assert "catalogue v1" in line_for(result, appended, "work.assigned", item).effect
    for appended, item in zip(m.rejected, ITEMS[:2], strict=True):
        assert "evidence missing" in line_for(result, appended, "work.rejected", item).effect
    for appended, item in zip(m.approved, ITEMS[2:], strict=True):
        line_for(result, appended, "work.approved", item)
    assert "major quality failure" in line_for(result, m.quality, "work.quality_failed").effect
    for appended, item in zip(m.delays, ITEMS[3:6], strict=True):
        assert "−0.25" in line_for(result, appended, "work.delayed", item).effect
    line_for(result, m.assessed, "assessment.supervisor_assessed", "general")
    # the versions used: named, and the positions of their publication
    assert (result.policy, result.catalogue) == (POLICY, 1)
    assert w.fact_at(result.policy_seq).type == "policy.published"
    catalogue = w.fact_at(result.catalogue_seq or -1)
    assert catalogue.type == "catalogue.published" and catalogue.data["agency"] == "KH-W1"
    assert result.as_of == m.assessed.seq


def test_an_ordinary_month(w: World, ev: Evaluations) -> None:
    m = ordinary_month(w)
    assert ev.catch_up() == m.assessed.seq + 1  # every entry of the log, from 0
    assert ev.catch_up() == 0 and ev.seq == m.assessed.seq
    doc = doc_of(ev, "score", KEY)
    assert (doc["total"], doc["grade"], doc["Q"], doc["C"], doc["P"]) == (
        "1073/12",
        "good",
        "95",
        "94.375",
        "93.125",
    )
    view = scored(ev)
    check_ordinary_month(w, m, view)
    head = replayed(ev)
    check_ordinary_month(w, m, head)
    same(view, head)
    unit = doc_of(ev, "unit", f"KH-W1/{MARCH}")
    assert unit["results"] == [
        {
            "employee": LAN,
            "total": "1073/12",
            "points_grade": "good",
            "grade": "good",
            "policy": POLICY,
            "catalogue": 1,
            "quota_check": 0,  # in the one group's population, not a holder: no rank
            "rank": None,
        }
    ]
    # before the assessment the general criteria were 0: replay as of the entry before it
    earlier = replayed(ev, as_of=m.assessed.seq - 1)
    assert earlier.general == 0 and earlier.total == Fraction(791, 12)
    assert earlier.grade == "completed"


def test_the_trace_names_the_policy_it_applied(w: World, ev: Evaluations) -> None:
    """Scenario 1: "the trace … names the policy and catalogue versions used"."""
    ordinary_month(w)
    ev.catch_up()
    result = replayed(ev)
    assert any("catalogue v1" in x.effect for x in result.trace)
    first = result.trace[0]
    assert POLICY in first.effect and first.seq == result.policy_seq


# -- scenario 2 ------------------------------------------------------------------------------


def test_a_bounded_adjustment(w: World, ev: Evaluations) -> None:
    m = ordinary_month(w)
    ev.catch_up()
    proposed, approved = bounded_adjustment(w)
    assert ev.catch_up() == 2  # the refused approval recorded nothing
    for result in (scored(ev), replayed(ev)):
        assert result.total == Fraction(1079, 12) and result.total < 90
        assert show(result.total, 4) == "89.9167" and result.grade == "good"
        assert result.general == 24 and result.task == Fraction(791, 12)
        line = line_for(result, approved, "score.adjustment_approved", "general")
        assert f"proposed at {proposed.seq} by hoa.hr" in line.effect
        assert "approved by minh.hr" in line.effect
    same(scored(ev), replayed(ev))
    assert doc_of(ev, "score", KEY)["total"] == "1079/12"
    # a proposal alone counts for nothing
    before = replayed(ev, as_of=proposed.seq)
    assert before.total == Fraction(1073, 12)
    check_ordinary_month(w, m, replayed(ev, as_of=m.assessed.seq))


# -- scenario 3 ------------------------------------------------------------------------------


def test_an_appeal_that_changes_the_grade(db_url: str, w: World, ev: Evaluations) -> None:
    m = ordinary_month(w)
    ev.catch_up()
    bounded_adjustment(w)
    ev.catch_up()
    w.now = at("2026-04-02")
    closed = close(w, MARCH)
    ev.catch_up()
    snapshot = doc_of(ev, "snapshot", f"KH-W1/{MARCH}")
    assert snapshot["close_seq"] == closed.seq and snapshot["recorded"] == sha(MARCH)
    assert snapshot["computed"] == snapshot_hash(snapshot["published"])
    assert snapshot["matches"] is False  # the story's close carries a made-up hash
    assert snapshot["published"]["before"] == closed.seq
    assert [(r["employee"], r["total"], r["grade"]) for r in snapshot["published"]["results"]] == [
        (LAN, "1079/12", "good")
    ]

    w.now = at("2026-04-05")
    rejections = [a.seq for a in m.rejected]
    contested = [*rejections, m.delays[0].seq]
    filed = w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": contested, "grounds": "g"})
    ev.catch_up()
    appeal = doc_of(ev, "appeal", f"{LAN}/ap-1")
    assert (appeal["status"], appeal["open"], appeal["filed_seq"]) == ("filed", True, filed.seq)
    ap = {"appeal": "ap-1", "appellant": LAN}
    w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    ev.catch_up()
    assert doc_of(ev, "appeal", f"{LAN}/ap-1")["reviewer"] == "an.rev"
    rulings = [
        {"act": rejections[0], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
        {"act": rejections[1], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
        {"act": m.delays[0].seq, "ruling": "exempted", "reason": "ngập lụt (bất khả kháng)"},
    ]
    w.now = at("2026-04-06")
    out = w.do("an.rev", "appeal.decided", {**ap, "rulings": rulings, "reasons": "Có cơ sở"})
    derived = [a.seq for a in out.derived]
    assert len(derived) == 3
    assert ev.catch_up() == 4

    # as of the close, and as of now
    then = replayed(ev, as_of=closed.seq)
    check_components(then, Fraction(1079, 12), "good", ("95", "94.375", "93.125"))
    now = replayed(ev)
    check_components(now, Fraction("93.5625"), "excellent", ("100", "99.375", "98.75"))
    assert now.task == Fraction("69.5625") and exact(now.total) == "93.5625"
    same(replayed(ev, as_of=filed.seq), then)  # an appeal filed changes nothing yet
    stamp = ev.view.recorded_at(closed.seq)  # the ledger's own clock: when it was recorded
    assert stamp is not None and Replay(ev.view).position(stamp) == closed.seq
    same(replayed(ev, as_of=stamp), then)

    difference = diff(then, now)
    changes = {what: (before, after) for what, before, after in difference.changes}
    assert changes["grade"] == ("good", "excellent")
    assert changes["total"] == ("89.9167", "93.5625")
    assert changes["Q"] == ("95.0000", "100.0000")
    ruled = [x for x in difference.only_after if x.fact == "work.ruling_applied"]
    assert [x.seq for x in ruled] == derived
    assert all("appeal ap-1" in x.effect for x in ruled)
    for seq in rejections:  # the rejection's line now says it was overturned, and by what
        (line,) = [x for x in difference.only_after if x.seq == seq]
        assert "overturned by appeal ap-1" in line.effect
        assert [x.seq for x in difference.only_before if x.seq == seq] == [seq]
    (exempted,) = [x for x in difference.only_after if x.seq == m.delays[0].seq]
    assert "exempted by appeal ap-1" in exempted.effect

    # the incremental view, a full rebuild and replay at the head agree
    incremental = scored(ev)
    same(incremental, now)
    assert ev.seq == out.derived[-1].seq
    check_refolds(db_url, ev)
    same(scored(ev), now)

    snapshot = doc_of(ev, "snapshot", f"KH-W1/{MARCH}")
    assert snapshot["close_seq"] == closed.seq
    assert snapshot["computed"] == snapshot_hash(snapshot["published"])
    assert snapshot["published"]["results"][0]["total"] == "1079/12"  # the close's own figures
    appeal = doc_of(ev, "appeal", f"{LAN}/ap-1")
    assert (appeal["status"], appeal["outcome"], appeal["open"]) == ("decided", "granted", False)
    assert appeal["closed_seq"] == out.seq and appeal["contested"] == contested
    due = policy_in_force(w, dt.date(2026, 4, 5)).appeal_answer_deadline(at("2026-04-05"))
    assert appeal["answer_due"] is not None
    assert dt.datetime.fromisoformat(appeal["answer_due"]) == due
    assert appeal["answered_late"] is False
    # rulings are compensating facts, not entries after the close
    assert [f for f in ev.view.find("flag") if f["kind"] == "entry_after_close"] == []


# -- scenario 4: a year, and an override -----------------------------------------------------


def marks(general: Decimal) -> dict[str, str]:
    """Supervisor marks over the five criteria summing to ``general`` (two decimals each)."""
    share = (general / 5).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    values = [share] * 4 + [general - 4 * share]
    assert all(0 <= v <= 6 for v in values) and sum(values) == general
    return {c: format(v.normalize(), "f") for c, v in zip(CRITERIA, values, strict=True)}


def month_with_total(w: World, month: int, total: str) -> Appended:
    """Lan's month 2026-``month``: 7 items, 6 approved and 1 rejected (T = 60 exactly), the
    general criteria ``total`` − 60; closed on the 2nd of the next month. Returns the close."""
    period = f"2026-{month:02d}"
    w.now = at(f"{period}-05")
    items = [f"lan-{month:02d}-{i}" for i in range(7)]
    for item in items:
        assign(w, item, period=period)
    for item in items:
        declare(w, item)
    for item in items[:6]:
        w.do("tuan.sup", "work.approved", {"item": item})
    w.do("tuan.sup", "work.rejected", {"item": items[6], "reason": "evidence missing"})
    assess(w, LAN, period, marks(Decimal(total) - 60))
    w.now = at(f"{2027 if month == 12 else 2026}-{month % 12 + 1:02d}-02")
    return close(w, period)


def year_of(w: World, ev: Evaluations) -> list[Appended]:
    """The twelve months of ``TOTALS``, caught up after each; returns the closes."""
    closes = []
    for month, total in enumerate(TOTALS, start=1):
        closes.append(month_with_total(w, month, total))
        ev.catch_up()
        result = scored(ev, f"{LAN}/2026-{month:02d}")
        assert result.total == Fraction(total) and result.task == 60, show(result.total, 4)
        year = doc_of(ev, "year", YEAR)
        so_far = [Fraction(t) for t in TOTALS[:month]]
        assert Fraction(year["mean"]) == sum(so_far) / month
        assert year["final"] is (month == 12)  # final once December is closed
    return closes


def check_year(doc: dict[str, Any], grade: str, overrides: Sequence[int] = ()) -> None:
    assert Fraction(doc["mean"]) == Fraction("72.9") and doc["shown"] == "72.90"
    assert doc["points_grade"] == "good" and doc["grade"] == grade
    assert [o["seq"] for o in doc["overrides"]] == list(overrides)
    assert [Fraction(m["total"]) for m in doc["months"]] == [Fraction(t) for t in TOTALS]
    assert doc["excluded"] == [] and doc["policy"] == POLICY


def test_a_year_and_an_override(db_url: str, w: World, ev: Evaluations) -> None:
    closes = year_of(w, ev)
    year = doc_of(ev, "year", YEAR)
    check_year(year, "good")
    assert year["final"] is True and year["final_seq"] == closes[-1].seq
    for q in range(4):
        quarter = doc_of(ev, "quarter", f"{LAN}/2026-Q{q + 1}")
        expected = sum(Fraction(t) for t in TOTALS[3 * q : 3 * q + 3]) / 3
        assert Fraction(quarter["mean"]) == expected

    w.now = at("2027-01-05")
    imposed = w.do("hoa.hr", "discipline.imposed", REPRIMAND)
    assert ev.catch_up() == 1
    year = doc_of(ev, "year", YEAR)
    check_year(year, "fails", [imposed.seq])
    assert year["overrides"][0]["grade"] == "fails" and "kt-1" in year["overrides"][0]["why"]
    # the reprimand's scope is the year: September's own score is untouched
    september = scored(ev, f"{LAN}/2026-09")
    assert september.grade == september.points_grade == "completed"  # 69.5
    assert september.overrides == ()

    w.now = at("2027-01-20")
    annulment = {"discipline": "kt-1", "employee": LAN, "reason": "hủy", "legal_basis": "Bản án"}
    w.do("minh.hr", "discipline.annulled", annulment)
    assert ev.catch_up() == 1
    check_year(doc_of(ev, "year", YEAR), "good")
    assert scored(ev, f"{LAN}/2026-09").grade == "completed"
    check_refolds(db_url, ev, step=50)


def test_a_reprimand_recorded_in_september(w: World, ev: Evaluations) -> None:
    """The year doc along the story: the reprimand counts from the moment it is recorded."""
    for month, total in enumerate(TOTALS[:8], start=1):
        month_with_total(w, month, total)
    ev.catch_up()
    eight = sum(Fraction(t) for t in TOTALS[:8]) / 8
    assert Fraction(doc_of(ev, "year", YEAR)["mean"]) == eight
    w.now = at("2026-09-10")
    imposed = w.do("hoa.hr", "discipline.imposed", REPRIMAND)
    ev.catch_up()
    year = doc_of(ev, "year", YEAR)
    assert (year["grade"], year["final"]) == ("fails", False)
    assert Fraction(year["mean"]) == eight and year["overrides"][0]["seq"] == imposed.seq
    for month, total in enumerate(TOTALS[8:], start=9):
        month_with_total(w, month, total)
        ev.catch_up()
        assert doc_of(ev, "year", YEAR)["grade"] == "fails"
    check_year(doc_of(ev, "year", YEAR), "fails", [imposed.seq])


# -- a year with maternity leave -------------------------------------------------------------


def test_a_year_with_maternity_leave(db_url: str, w: World, ev: Evaluations) -> None:
    w.now = at("2026-01-02")
    leave = {
        "employee": LAN,
        "leave": "ts-1",
        "kind": "maternity",
        "start": "2026-05-01",
        "end": "2026-08-31",
    }
    recorded = w.do("hoa.hr", "employee.leave_recorded", leave)
    ev.catch_up()
    for month, total in enumerate(TOTALS, start=1):
        month_with_total(w, month, total)
        if month % 4 == 0:
            ev.catch_up()
    year = doc_of(ev, "year", YEAR)
    away = [f"2026-{m:02d}" for m in range(5, 9)]
    assert [x["period"] for x in year["excluded"]] == away
    assert all(x["leave"] == [recorded.seq] for x in year["excluded"])
    assert [x["period"] for x in year["months"]] == [
        f"2026-{m:02d}" for m in (1, 2, 3, 4, 9, 10, 11, 12)
    ]
    counted = [Fraction(t) for i, t in enumerate(TOTALS, start=1) if not 5 <= i <= 8]
    assert Fraction(year["mean"]) == sum(counted) / 8 == Fraction("73.975")
    assert year["grade"] == "good" and year["final"] is True
    # the quarters leave them out too: Q3 counts September alone
    q3 = doc_of(ev, "quarter", f"{LAN}/2026-Q3")
    assert Fraction(q3["mean"]) == Fraction(TOTALS[8])
    assert [x["period"] for x in q3["excluded"]] == ["2026-07", "2026-08"]
    check_refolds(db_url, ev, step=50)
