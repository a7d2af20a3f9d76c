"""The read models beyond one score, on both backends: the quota reading of a unit view, a
transfer between agencies, and a catalogue version published mid-year.

Each story is folded incrementally (caught up along the way), then checked against a full
rebuild and a refold in small resumed batches (``check_refolds``), and against as-of replay.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from domain.policy import PolicyError, Quota, parse_policy, shipped_policy
from domain.schemas import period_start
from ledger.config import parse_database
from projections.engine import Evaluations
from projections.replay import Replay, ReplayError
from projections.runners import rebuild
from projections.score import diff
from tests.domain.test_scenarios import assign, close, declare
from tests.domain.world import LAN, World, at
from tests.projections.test_scores import all_views, check_refolds, doc_of, marks, scored

STAFF = ("an.le", "binh.vo", "chi.do", "dung.ha", "em.ly")


def month_for(
    w: World,
    employee: str,
    period: str,
    total: str,
    *,
    code: str = "OSS-01",
    items: int = 4,
    by: str = "tuan.sup",
) -> None:
    """``employee``'s ``period``: ``items`` items of ``code`` assigned, declared and approved
    by ``by`` (Q = C = P = 100, so T = 70), and general criteria making ``total``."""
    w.now = at(f"{period}-05")
    names = [f"{employee}-{period}-{i}" for i in range(items)]
    for item in names:
        assign(w, item, employee, period, code=code, by=by)
    for item in names:
        declare(w, item, who=employee)
    for item in names:
        w.do(by, "work.approved", {"item": item})
    w.do(
        by,
        "assessment.supervisor_assessed",
        {"employee": employee, "period": period, "scores": marks(Decimal(total) - 70)},
    )


# -- the quota -------------------------------------------------------------------------------


def test_the_quota_keeps_the_best_excellent_and_moves_the_rest(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """Six people in one agency and task group, four of them at 90 or more: the default
    policy's fixed-point reading allows the largest k with k ≤ 0.2 × (6 − k), 1 excellent.
    The tie at 95 is broken by task points, general criteria, then the employee id."""
    for name in STAFF:
        w.employ(name)
    totals = dict(zip((LAN, *STAFF), ("95", "95", "92", "91", "85", "72"), strict=True))
    for name, total in totals.items():
        month_for(w, name, "2026-03", total)
    ev.catch_up()
    for name, total in totals.items():
        result = scored(ev, f"{name}/2026-03")
        assert (result.task, result.total) == (70, Fraction(total)), name
    unit = doc_of(ev, "unit", "KH-W1/2026-03")
    assert unit["count"] == 6
    assert unit["distribution"] == {"excellent": 1, "good": 5, "completed": 0, "fails": 0}
    [check] = unit["quota"]
    assert check["group"] == {"agency": "KH-W1", "task_group": "B"}  # OSS-01 is in group B
    assert (check["population"], check["allowed"], check["holders"]) == (6, 1, 4)
    assert check["kept"] == ["an.le"]  # 95, like Lan, and "an.le" < "lan.nguyen"
    assert check["moved_to_good"] == [LAN, "binh.vo", "chi.do"]  # by total, descending
    final = {r["employee"]: (r["points_grade"], r["grade"]) for r in unit["results"]}
    assert final["an.le"] == ("excellent", "excellent")
    for name in (LAN, "binh.vo", "chi.do"):
        assert final[name] == ("excellent", "good"), name
    assert final["dung.ha"] == final["em.ly"] == ("good", "good")
    # each row names its quota check and its rank among the holders; the cut-off is the
    # total of the last one who kept the grade
    ranks = {r["employee"]: (r["quota_check"], r["rank"]) for r in unit["results"]}
    assert ranks == {
        "an.le": (0, 1),
        LAN: (0, 2),
        "binh.vo": (0, 3),
        "chi.do": (0, 4),
        "dung.ha": (0, None),
        "em.ly": (0, None),
    }
    assert check["cut_off"] == "95"
    # the score view keeps the grade the points earned; the unit view applies the quota
    assert scored(ev, f"{LAN}/2026-03").grade == "excellent"
    # a seventh to tenth person, good: population 10; the default pack's fixed-point reading
    # allows the largest k with k ≤ 0.2 × (10 − k): 1 (the "population" reading would allow
    # floor(0.2 × 10) = 2, leaving 8 good: 2 > 0.2 × 8)
    more = ("giang.to", "hai.mac", "hung.vu", "khoa.lam")
    for name in more:
        w.employ(name)
        month_for(w, name, "2026-03", "80")
    ev.catch_up()
    [check] = doc_of(ev, "unit", "KH-W1/2026-03")["quota"]
    assert (check["population"], check["allowed"], check["reading"]) == (10, 1, "fixed_point")
    assert check["kept"] == ["an.le"] and check["moved_to_good"] == [LAN, "binh.vo", "chi.do"]
    distribution = doc_of(ev, "unit", "KH-W1/2026-03")["distribution"]
    assert distribution["excellent"] == 1 and distribution["good"] == 9  # 1 ≤ 0.2 × 9
    # the close publishes the unit view's final grades in its snapshot
    w.now = at("2026-04-02")
    close(w, "2026-03")
    ev.catch_up()
    published = doc_of(ev, "snapshot", "KH-W1/2026-03")["published"]
    grades = {r["employee"]: r["grade"] for r in published["results"]}
    assert grades["binh.vo"] == grades[LAN] == "good" and grades["an.le"] == "excellent"
    check_refolds(db_url, ev)


# -- a transfer between agencies -------------------------------------------------------------


def test_a_transfer_between_agencies(db_url: str, w: World, ev: Evaluations) -> None:
    """Lan works March in KH-W1 and is transferred to KH-W2 from 1 April: March stays with
    the old agency (its unit view, its close), April belongs to the new one, and the year
    merges both months under the agency she belongs to at its end."""
    w.person("ha.sup")
    w.grant("ha.sup", "supervisor", "KH-W2")
    month_for(w, LAN, "2026-03", "80")
    ev.catch_up()
    w.now = at("2026-03-20")
    move = {"employee": LAN, "unit": "KH-W2", "position": "officer", "since": "2026-04-01"}
    w.do("hoa.hr", "employee.transferred", {**move, "reason": "luân chuyển"})
    ev.catch_up()
    march = scored(ev, f"{LAN}/2026-03")
    assert (march.agency, march.unit, march.total) == ("KH-W1", "KH-W1-OSS", 80)
    # April: assigned and approved by the new agency's supervisor
    w.now = at("2026-04-05")
    names = [f"lan-04-{i}" for i in range(4)]
    for item in names:
        assign(w, item, period="2026-04", by="ha.sup")
    for item in names:
        declare(w, item)
    for item in names:
        w.do("ha.sup", "work.approved", {"item": item})
    w.do(
        "ha.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": "2026-04", "scores": marks(Decimal("16"))},
    )
    ev.catch_up()
    april = scored(ev, f"{LAN}/2026-04")
    assert (april.agency, april.unit, april.total) == ("KH-W2", "KH-W2", 86)
    assert april.catalogue == 1 and "KH-W2 catalogue v1" in april.trace[0].effect
    # each agency's unit view holds the month that belongs to it, and only that one
    assert [r["employee"] for r in doc_of(ev, "unit", "KH-W1/2026-03")["results"]] == [LAN]
    assert ev.view.doc("unit", "KH-W1/2026-04") is None
    assert [r["employee"] for r in doc_of(ev, "unit", "KH-W2/2026-04")["results"]] == [LAN]
    assert ev.view.doc("unit", "KH-W2/2026-03") is None
    year = doc_of(ev, "year", f"{LAN}/2026")
    assert year["agency"] == "KH-W2"
    assert [m["period"] for m in year["months"]] == ["2026-03", "2026-04"]
    assert Fraction(year["mean"]) == 83
    # each agency closes its own month; the snapshots name only their own people
    w.now = at("2026-05-04")
    close(w, "2026-03")
    w.do("hoa.hr", "period.closed", {"agency": "KH-W2", "period": "2026-04", "snapshot": "0" * 64})
    ev.catch_up()
    for place in ("KH-W1/2026-03", "KH-W2/2026-04"):
        published = doc_of(ev, "snapshot", place)["published"]
        assert [r["employee"] for r in published["results"]] == [LAN], place
    replay = Replay(ev.view)
    assert replay.score(LAN, "2026-03").to_doc() == march.to_doc()
    assert replay.score(LAN, "2026-04").to_doc() == april.to_doc()
    check_refolds(db_url, ev)


# -- a catalogue version published mid-year --------------------------------------------------


def catalogue_v2(products: str) -> dict[str, Any]:
    from bench.common import sample_catalogue

    doc = sample_catalogue("KH-W1")
    doc["version"], doc["effective_from"] = 2, "2026-04-01"
    doc["items"][0]["products"] = products  # OSS-01
    return doc


def test_a_catalogue_change_mid_year(db_url: str, w: World, ev: Evaluations) -> None:
    """KH-W1 publishes catalogue v2 on 25 March, in force from 1 April, doubling OSS-01's
    standard products. March's items keep v1's values, even those approved in April; April
    is weighed with v2; the trace names the version each period applied."""
    w.now = at("2026-03-05")
    march = [f"lan-03-{i}" for i in range(3)]
    for item in march:
        assign(w, item)
    assign(w, "lan-03-b", code="OSS-02")
    for item in (*march, "lan-03-b"):
        declare(w, item)
    for item in march[:2]:
        w.do("tuan.sup", "work.approved", {"item": item})
    ev.catch_up()
    before = scored(ev, f"{LAN}/2026-03")
    assert (before.catalogue, before.assigned, before.done) == (1, 4, 2)
    w.now = at("2026-03-25")
    published = w.do("hoa.hr", "catalogue.published", catalogue_v2("2"))
    ev.catch_up()
    # the last March items approved after v2 was published (and after 1 April)
    w.now = at("2026-04-02")
    for item in (march[2], "lan-03-b"):
        w.do("tuan.sup", "work.approved", {"item": item})
    ev.catch_up()
    after = scored(ev, f"{LAN}/2026-03")
    assert (after.catalogue, after.catalogue_seq) == (1, before.catalogue_seq)
    assert (after.assigned, after.done, after.Q) == (4, 4, 100)
    assert all(
        "(catalogue v1: 1 standard products each)" in line.effect
        for line in after.trace
        if line.fact == "work.assigned"
    )
    # April's items are weighed with v2: OSS-01 now counts 2
    w.now = at("2026-04-06")
    assign(w, "lan-04-a", period="2026-04")
    assign(w, "lan-04-b", period="2026-04", code="OSS-02")
    declare(w, "lan-04-b")
    w.do("tuan.sup", "work.approved", {"item": "lan-04-b"})
    ev.catch_up()
    april = scored(ev, f"{LAN}/2026-04")
    assert (april.catalogue, april.catalogue_seq) == (2, published.seq)
    assert (april.assigned, april.done) == (3, 1)  # 2 (OSS-01 under v2) + 1 (OSS-02)
    assert Fraction(100, 3) == april.Q
    assert "catalogue v2" in april.trace[0].effect
    # as of before the publication, April had no v2 to apply; March is unchanged throughout
    replay = Replay(ev.view)
    assert replay.score(LAN, "2026-03", as_of=published.seq - 1).catalogue == 1
    assert replay.score(LAN, "2026-04").to_doc() == april.to_doc()
    check_refolds(db_url, ev)


# -- two anti-gaming flags -------------------------------------------------------------------


def flags_of(ev: Evaluations, kind: str) -> dict[str, dict[str, Any]]:
    return {d["subject"]: d for d in ev.view.find("flag") if d["kind"] == kind}


def test_easiest_items_only(db_url: str, w: World, ev: Evaluations) -> None:
    """Catalogue v2 (from April) makes OSS-02 worth 3 standard products, OSS-01 still 1. Lan
    is given only OSS-01 items in April: flagged, with the assignments' positions; Mai, given
    both kinds, is not; when Lan is given an OSS-02 item too, her flag is withdrawn."""
    w.employ("mai.tran")
    w.now = at("2026-03-20")
    doc = catalogue_v2("1")
    doc["items"][1]["products"] = "3"  # OSS-02
    w.do("hoa.hr", "catalogue.published", doc)
    month_for(w, LAN, "2026-04", "80", items=3)
    month_for(w, "mai.tran", "2026-04", "80", items=2)
    assign(w, "mai-04-x", "mai.tran", "2026-04", code="OSS-02")
    ev.catch_up()
    flagged = flags_of(ev, "easiest_items")
    assert list(flagged) == [f"{LAN}/2026-04"]
    lan = flagged[f"{LAN}/2026-04"]
    assigned = _assignments(w, LAN, "2026-04")
    assert lan["facts"] == assigned and "OSS-01" in lan["why"] and "catalogue v2" in lan["why"]
    assign(w, "lan-04-x", period="2026-04", code="OSS-02")
    ev.catch_up()
    assert flags_of(ev, "easiest_items") == {}
    check_refolds(db_url, ev)


def _assignments(w: World, employee: str, period: str) -> list[Any]:
    """The positions of ``employee``'s assignments for ``period``, read from the log."""
    out = []
    for seq in sorted(w.log_bytes()):
        fact = w.fact_at(seq)
        if fact.type == "work.assigned" and (fact.data["employee"], fact.data["period"]) == (
            employee,
            period,
        ):
            out.append(seq)
    return out


def test_an_outlier_agency(db_url: str, w: World, ev: Evaluations) -> None:
    """March: twenty people in KH-W1 around 90, three in KH-W2 at 70. Against everyone
    scored that month, KH-W2's mean lies 4.2 standard errors below (flags.outlier_z = 3):
    flagged, naming the position its unit view reflects; KH-W1, 1.6 above, is not. When
    KH-W2's results rise, the flag is withdrawn."""
    w.person("ha.sup")
    w.grant("ha.sup", "supervisor", "KH-W2")
    staff = [f"w1.{i:02d}" for i in range(19)]
    for n, name in enumerate(staff):
        w.employ(name)
        month_for(w, name, "2026-03", "88" if n % 2 else "92")
    month_for(w, LAN, "2026-03", "90")
    west = ["w2.a", "w2.b", "w2.c"]
    for name in west:
        w.employ(name, unit="KH-W2")
        month_for(w, name, "2026-03", "70", by="ha.sup")
    ev.catch_up()
    totals = [Fraction(88 if n % 2 else 92) for n in range(19)] + [Fraction(90)]
    everyone = totals + [Fraction(70)] * 3
    mean = sum(everyone) / len(everyone)
    sd = float(sum((t - mean) ** 2 for t in everyone) / (len(everyone) - 1)) ** 0.5
    z_west = float(70 - mean) * 3**0.5 / sd
    z_east = float(sum(totals) / 20 - mean) * 20**0.5 / sd
    assert z_west < -3 < 3 > z_east > 0
    flagged = flags_of(ev, "outlier_agency")
    assert list(flagged) == ["KH-W2/2026-03"], list(flagged)
    flag = flagged["KH-W2/2026-03"]
    unit = doc_of(ev, "unit", "KH-W2/2026-03")
    assert flag["facts"] == [unit["as_of"]]
    assert f"z = {z_west:.1f}" in flag["why"] and "23 people scored" in flag["why"], flag["why"]
    # KH-W2's supervisor revises the three assessments upwards: no longer an outlier
    w.now = at("2026-03-28")
    for name in west:
        w.do(
            "ha.sup",
            "assessment.supervisor_assessed",
            {"employee": name, "period": "2026-03", "scores": marks(Decimal("19"))},
        )
    ev.catch_up()
    assert flags_of(ev, "outlier_agency") == {}
    check_refolds(db_url, ev)


# -- leaders of one unit: head and deputy ----------------------------------------------------


def _head_and_deputy(w: World, head: dict[str, Any] | None, deputy: dict[str, Any] | None) -> None:
    """The one-stop section's head (son.truong) and deputy (thu.pho) beside Lan, under the
    positions ``head`` and ``deputy`` given (``None``: the world's unranked ``head``; a new
    unranked ``deputy``). Lan's month totals 85 (good), the deputy's 80 (task 70, general
    10) when her task is whole; the head's fails whatever his factor (nothing approved,
    general 20)."""
    for position in (head, deputy or {"position": "deputy", "name": "Phó", "leader": True}):
        if position is not None:
            w.do("hoa.hr", "org.position_defined", position)
    w.employ("son.truong", position=head["position"] if head else "head")
    w.employ("thu.pho", position="deputy")
    month_for(w, LAN, "2026-03", "85")
    month_for(w, "thu.pho", "2026-03", "80")
    w.now = at("2026-03-06")
    for i in range(2):
        assign(w, f"son-{i}", "son.truong", "2026-03")
    w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": "son.truong", "period": "2026-03", "scores": marks(Decimal(20))},
    )


def _leader_lines(ev: Evaluations, key: str) -> list[str]:
    return [line.effect for line in scored(ev, key).trace if line.subject == "leader"]


def _figures(ev: Evaluations, key: str) -> tuple[Any, ...]:
    doc = ev.view.docs("score", [key])[key]
    return doc["task"], doc["general"], doc["total"], doc["grade"]


def _staff_of(ev: Evaluations, leader: str) -> list[str]:
    """``leader``'s staff in the one-stop section in March 2026, by ``Registry.staff``."""
    day = period_start("2026-03")
    members = ev.registry.members("KH-W1-OSS", day)
    return ev.registry.staff(leader, "KH-W1-OSS", members, day)


def test_a_deputys_staff_leaves_out_her_head(db_url: str, w: World, ev: Evaluations) -> None:
    """The one-stop section has a head (position ``chief``, rank 1), a deputy (``deputy``,
    rank 2) and Lan. The head's month fails (nothing approved, general 20): the deputy's
    staff is Lan alone, so her task points stay whole (70 + 10 = 80, good); the head's staff
    is Lan and the deputy, both at least completed (his task × 1). Without ranks, the head's
    fails halves the deputy's task points (35 + 10 = 45: the next test)."""
    w.refused(
        "hoa.hr",
        "org.position_defined",
        {"position": "clerk", "name": "Văn thư", "rank": 2},
        "state.invalid",
    )
    _head_and_deputy(
        w,
        {"position": "chief", "name": "Trưởng", "leader": True, "rank": 1},
        {"position": "deputy", "name": "Phó", "leader": True, "rank": 2},
    )
    ev.catch_up()
    deputy = scored(ev, "thu.pho/2026-03")
    assert (deputy.task, deputy.total, deputy.grade) == (70, 80, "good")
    assert _leader_lines(ev, "thu.pho/2026-03") == [
        "leader's unit: every one of 1 staff at least completed: task × 1"
    ]
    head = scored(ev, "son.truong/2026-03")
    assert (head.task, head.total, head.grade) == (0, 20, "fails")
    assert _leader_lines(ev, "son.truong/2026-03") == [
        "leader's unit: every one of 2 staff at least completed: task × 1"
    ]
    assert _staff_of(ev, "thu.pho") == [LAN]
    assert _staff_of(ev, "son.truong") == [LAN, "thu.pho"]
    # replay from the log agrees, and so do a rebuild and a refold
    replay = Replay(ev.view)
    assert replay.score("thu.pho", "2026-03").total == 80
    assert replay.score("son.truong", "2026-03").total == 20
    check_refolds(db_url, ev)


def test_unranked_leaders_of_one_unit_keep_the_rule_before_ranks(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """A log written before ranks: the head and the deputy of the one-stop section are both
    on leader positions without a rank, so each counts everyone posted in the unit but
    herself, the other leader included (the staff rule before ranks). By hand: the deputy's
    staff is Lan (85, good) and the head (20, fails), so her task is halved: 70 × 0.5 = 35,
    + 10 = 45, fails; the head's staff is Lan and the deputy (45, fails): 0 × 0.5 = 0, + 20
    = 20, fails. The engine, replay, a rebuild and a refold all read it so."""
    _head_and_deputy(w, None, None)
    ev.catch_up()
    deputy = scored(ev, "thu.pho/2026-03")
    assert (deputy.task, deputy.total, deputy.grade) == (35, 45, "fails")
    assert _leader_lines(ev, "thu.pho/2026-03") == [
        "leader's unit: son.truong below completed: task × 0.5"
    ]
    head = scored(ev, "son.truong/2026-03")
    assert (head.task, head.total, head.grade) == (0, 20, "fails")
    assert _staff_of(ev, "son.truong") == [LAN, "thu.pho"]
    assert _staff_of(ev, "thu.pho") == [LAN, "son.truong"]
    # replay from the log reads each in the other's staff, with the same figures
    replay = Replay(ev.view)
    deputy_replayed = replay.score("thu.pho", "2026-03")
    assert (deputy_replayed.task, deputy_replayed.total) == (35, 45)
    head_replayed = replay.score("son.truong", "2026-03")
    assert (head_replayed.task, head_replayed.total) == (0, 20)
    assert [line.effect for line in head_replayed.trace if line.subject == "leader"] == [
        "leader's unit: thu.pho below completed: task × 0.5"
    ]
    # a rebuild and a refold in batches give the same figures (each leader's trace cites the
    # other's result as it stood when it was scored, as before ranks: not compared here)
    figures = {k: _figures(ev, k) for k in ("thu.pho/2026-03", "son.truong/2026-03")}
    assert rebuild(parse_database(db_url)) == ev.seq + 1
    assert {k: _figures(ev, k) for k in figures} == figures
    ev.view.clear()
    while Evaluations(ev.view).catch_up(limit=7):
        pass
    assert {k: _figures(ev, k) for k in figures} == figures


def test_an_unranked_head_stays_in_a_ranked_deputys_staff(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """The rank rule holds only between ranked leaders: a deputy of rank 2 beside the
    world's unranked head counts him (he is never left out for a rank he does not have):
    her task is halved by his fails (35 + 10 = 45); he counts her as before (20)."""
    _head_and_deputy(w, None, {"position": "deputy", "name": "Phó", "leader": True, "rank": 2})
    ev.catch_up()
    deputy = scored(ev, "thu.pho/2026-03")
    assert (deputy.task, deputy.total) == (35, 45)
    assert _leader_lines(ev, "thu.pho/2026-03") == [
        "leader's unit: son.truong below completed: task × 0.5"
    ]
    assert _staff_of(ev, "thu.pho") == [LAN, "son.truong"]
    assert _staff_of(ev, "son.truong") == [LAN, "thu.pho"]
    replay = Replay(ev.view)
    assert replay.score("thu.pho", "2026-03").total == 45
    assert replay.score("son.truong", "2026-03").total == 20


# -- quota readings ----------------------------------------------------------------------------


def _quota(reading: str, rounding: str = "floor", ratio: str = "0.2") -> Quota:
    document = shipped_policy("default")
    document["quota"].update(reading=reading, rounding=rounding, max_ratio=ratio)
    quota = parse_policy(document).quota
    assert quota is not None
    return quota


def test_the_fixed_point_reading_against_a_brute_force_count() -> None:
    """The largest k with k ≤ rounding(ratio × (N − k)), counted by trying every k, for N up
    to 60 and several ratios and roundings; with exact figures for the default 0.2."""
    for ratio in ("0.2", "0.25", "0.1", "0.5", "1", "0", "0.33"):
        for rounding in ("floor", "ceil", "half_up"):
            q = _quota("fixed_point", rounding, ratio)
            for n in range(61):
                brute = max(k for k in range(n + 1) if k <= q._rounded(Fraction(ratio) * (n - k)))
                assert q.allowed(n, 0) == brute, (ratio, rounding, n)
    q = _quota("fixed_point")
    assert [q.allowed(n) for n in (1, 4, 5, 6, 10, 11, 12, 17, 18, 100)] == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        3,
        16,
    ]
    # against the other readings, 10 in the population of whom 4 hold excellent
    assert _quota("population").allowed(10, 4) == 2  # floor(0.2 × 10)
    assert _quota("before_demotion").allowed(10, 4) == 1  # floor(0.2 × 6 rated good)
    assert q.allowed(10, 4) == 1  # 1 ≤ 0.2 × 9; 2 > 0.2 × 8
    assert _quota("before_demotion").allowed(30, 4) == 5  # floor(0.2 × 26)
    assert _quota("population").allowed(30, 4) == 6 and q.allowed(30, 4) == 5


def test_a_policy_without_a_reading_keeps_the_population_reading() -> None:
    """A document written before the key (a log's policy.published) reads as before; the
    fixed point needs grade and demote_to among of_grades."""
    document = shipped_policy("default")
    del document["quota"]["reading"]
    quota = parse_policy(document).quota
    assert quota is not None and quota.reading == "population" and quota.allowed(10, 4) == 2
    document["quota"].update(reading="fixed_point", of_grades=["good"])
    with pytest.raises(PolicyError) as refused:
        parse_policy(document)
    assert refused.value.path == "document.quota.reading"
    document["quota"].update(reading="halfway", of_grades=["excellent", "good"])
    with pytest.raises(PolicyError):
        parse_policy(document)


# -- a unit's grades replayed: as of a position, under another policy version ---------------


def policy_v2() -> dict[str, Any]:
    """Version 2 of the default line, from July: the quota read on the whole population at
    half of it, and a leader's unit met only if every staff member is at least good."""
    doc = shipped_policy("default")
    doc["version"], doc["effective_from"] = 2, "2026-07-01"
    doc["quota"].update(reading="population", max_ratio="0.5")
    doc["leader_unit"]["min_grade"] = "good"
    return doc


def test_a_unit_replayed_under_another_policy_and_as_of_a_position(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """Six staff (95, 95, 92, 91, 85, 65) and their head (task 70, general 10) in KH-W1.
    In force (v1): em.ly's 65 is completed, so the head keeps task × 1 (80, good); the
    population is the six good or better, fixed point allows 1 (an.le; cut-off 95). Under v2
    (from July, replayed for March): em.ly is below good, so the head's task is halved
    (35 + 10 = 45, fails) and he leaves the population: 5, and 0.5 × 5 floors to 2 allowed
    (an.le and Lan keep excellent, Bình and Chi are moved; cut-off 95). Nothing is written."""
    from projections.published import unit_diff

    w.employ("son.truong", position="head")
    for name in STAFF:
        w.employ(name)
    totals = dict(zip((LAN, *STAFF), ("95", "95", "92", "91", "85", "100"), strict=True))
    for name, total in totals.items():
        month_for(w, name, "2026-03", total, items=2 if name == "em.ly" else 4)
    # two more items for em.ly, never done: Q = C = P = 50, T = 35, total 35 + 30 = 65
    extra = [assign(w, f"em.ly-extra-{i}", "em.ly", "2026-03") for i in range(2)]
    month_for(w, "son.truong", "2026-03", "80")
    w.now = at("2026-03-20")
    published = w.do("admin", "policy.published", {"scope": "KH", "document": policy_v2()})
    ev.catch_up()
    head = scored(ev, "son.truong/2026-03")
    assert (head.task, head.total, head.grade) == (70, 80, "good")
    stored = doc_of(ev, "unit", "KH-W1/2026-03")
    views, log = all_views(ev), w.log_bytes()
    replay = Replay(ev.view)
    # at the head under the policy in force: the very document the projection wrote
    assert replay.unit("KH-W1", "2026-03") == stored
    [check] = stored["quota"]
    assert (check["population"], check["allowed"], check["holders"]) == (6, 1, 4)
    assert (check["kept"], check["cut_off"], check["reading"]) == (["an.le"], "95", "fixed_point")
    # under version 2
    other = replay.unit("KH-W1", "2026-03", policy=2)
    # its "as of" covers what the results depend on: version 2's publication too
    assert other["policy"] == "vn-decree-335-2025@2" and other["as_of"] == published.seq
    rows = {r["employee"]: (r["total"], r["points_grade"], r["grade"]) for r in other["results"]}
    assert rows == {
        "an.le": ("95", "excellent", "excellent"),
        LAN: ("95", "excellent", "excellent"),
        "binh.vo": ("92", "excellent", "good"),
        "chi.do": ("91", "excellent", "good"),
        "dung.ha": ("85", "good", "good"),
        "em.ly": ("65", "completed", "completed"),
        "son.truong": ("45", "fails", "fails"),
    }
    [check] = other["quota"]
    assert (check["population"], check["allowed"], check["holders"]) == (5, 2, 4)
    assert (check["kept"], check["moved_to_good"]) == (["an.le", LAN], ["binh.vo", "chi.do"])
    assert (check["cut_off"], check["reading"]) == ("95", "population")
    assert other["distribution"] == {"excellent": 2, "good": 3, "completed": 1, "fails": 1}
    assert other["mean"] == "568/7"  # (95 + 95 + 92 + 91 + 85 + 65 + 45) / 7
    # the difference, now against version 2: each row's grade and total on both sides, the
    # quota's reading and cut-off on each side
    difference = unit_diff(stored, other)
    assert difference["policy"] == {
        "before": "vn-decree-335-2025@1",
        "after": "vn-decree-335-2025@2",
    }
    assert all("policy" in r["changed"] for r in difference["rows"])  # every row's is v2
    changed = {r["employee"]: r for r in difference["rows"] if r["changed"] != ["policy"]}
    assert set(changed) == {LAN, "son.truong"}
    assert changed[LAN]["changed"] == ["grade", "policy"]
    assert (changed[LAN]["before"]["grade"], changed[LAN]["after"]["grade"]) == (
        "good",
        "excellent",
    )
    son = changed["son.truong"]
    assert son["changed"] == ["total", "points_grade", "grade", "policy"]
    assert (son["before"]["total"], son["after"]["total"]) == ("80", "45")
    assert (son["before"]["grade"], son["after"]["grade"]) == ("good", "fails")
    [side] = difference["quota"]
    assert side["group"] == {"agency": "KH-W1", "task_group": "B"}
    assert {k: side["before"][k] for k in ("reading", "population", "allowed", "cut_off")} == {
        "reading": "fixed_point",
        "population": 6,
        "allowed": 1,
        "cut_off": "95",
    }
    assert {k: side["after"][k] for k in ("reading", "population", "allowed", "cut_off")} == {
        "reading": "population",
        "population": 5,
        "allowed": 2,
        "cut_off": "95",
    }
    assert (side["before"]["kept_count"], side["after"]["moved_count"]) == (1, 2)
    # as of the position before em.ly's extra items: she stood at 100 (excellent, the one
    # who kept it), and the head, with no facts yet, scored 0 (fails)
    before = replay.unit("KH-W1", "2026-03", as_of=extra[0].seq - 1)
    assert before["as_of"] == extra[0].seq - 1  # em.ly's assessment, the last fact then
    rows = {r["employee"]: (r["total"], r["grade"]) for r in before["results"]}
    assert rows["em.ly"] == ("100", "excellent") and rows["son.truong"] == ("0", "fails")
    # the head, with no items, is a group of his own (task group ""), holding no one
    blank, check = before["quota"]
    assert blank["group"] == {"agency": "KH-W1", "task_group": ""}
    assert (blank["population"], blank["holders"]) == (0, 0)
    assert (check["population"], check["allowed"], check["holders"]) == (6, 1, 5)
    assert (check["kept"], check["cut_off"]) == (["em.ly"], "100")
    moved = unit_diff(before, stored)
    em = next(r for r in moved["rows"] if r["employee"] == "em.ly")
    assert (em["before"]["total"], em["after"]["total"]) == ("100", "65")
    assert (em["before"]["grade"], em["after"]["grade"]) == ("excellent", "completed")
    gone, side = moved["quota"]
    assert (gone["group"]["task_group"], gone["after"], gone["changed"]) == ("", None, True)
    assert (side["before"]["cut_off"], side["after"]["cut_off"]) == ("100", "95")
    assert (side["before"]["holders"], side["after"]["holders"]) == (5, 4)
    # nothing was written: the views and the log are as they were
    assert all_views(ev) == views and w.log_bytes() == log
    with pytest.raises(ReplayError):
        replay.unit("KH-W1", "2026-03", policy=7)
    with pytest.raises(ReplayError):
        replay.unit("KH-W2", "2026-03")


# -- a leader's score and its evidence ---------------------------------------------------------


def test_a_leaders_trace_names_the_staff_results_and_the_rulings(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """Lan has 4 items, 2 approved and 2 rejected, general 10: Q = C = P = 50, T = 35, total
    45 (fails). Her head (task 70, general 10) has her as his only staff: task × 0.5, 35 + 10
    = 45 (fails). After the close, an appeal overturns both rejections: Lan 70 + 10 = 80
    (good), the head's task is whole again (80, good). His trace names Lan's result with the
    positions of the rulings, the diff close → now cites them, and his "as of" covers Lan's
    facts: replaying as of it gives his score."""
    w.employ("son.truong", position="head")
    w.now = at("2026-03-05")
    items = [f"lan-03-{i}" for i in range(4)]
    for item in items:
        assign(w, item)
    for item in items:
        declare(w, item)
    for item in items[:2]:
        w.do("tuan.sup", "work.approved", {"item": item})
    rejected = [
        w.do("tuan.sup", "work.rejected", {"item": item, "reason": "thiếu hồ sơ"}).seq
        for item in items[2:]
    ]
    w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": "2026-03", "scores": marks(Decimal(10))},
    )
    month_for(w, "son.truong", "2026-03", "80")
    ev.catch_up()
    lan, head = scored(ev, f"{LAN}/2026-03"), scored(ev, "son.truong/2026-03")
    assert (lan.task, lan.total, lan.grade) == (35, 45, "fails")
    assert (head.task, head.total, head.grade) == (35, 45, "fails")
    w.now = at("2026-04-02")
    closed = close(w, "2026-03")
    w.now = at("2026-04-05")
    filed = {"appeal": "ap-1", "contested": rejected, "grounds": "hồ sơ đã nộp"}
    w.do(LAN, "appeal.filed", filed)
    ap = {"appeal": "ap-1", "appellant": LAN}
    w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    w.now = at("2026-04-06")
    rulings = [{"act": s, "ruling": "overturned", "reason": "hồ sơ đã đủ"} for s in rejected]
    decided = w.do("an.rev", "appeal.decided", {**ap, "rulings": rulings, "reasons": "Có cơ sở"})
    derived = [a.seq for a in decided.derived]
    assert len(derived) == 2
    ev.catch_up()
    lan, head = scored(ev, f"{LAN}/2026-03"), scored(ev, "son.truong/2026-03")
    assert (lan.task, lan.total, lan.grade, lan.rulings) == (70, 80, "good", tuple(derived))
    assert (head.task, head.total, head.grade) == (70, 80, "good")
    # the head's trace names Lan's result, the positions of the rulings, the rule
    (staff,) = [x for x in head.trace if x.subject == LAN]
    assert staff.seq == derived[-1] == lan.as_of
    assert staff.effect == (
        f"staff result {LAN} 2026-03: good (total 80.0000), from the facts up to position"
        f" {derived[-1]}; appeal rulings applied at {derived[0]}, {derived[1]}: at least completed"
    )
    assert staff.rule == "leader_unit.min_grade = completed"
    # his "as of" is Lan's last fact, after his own: replaying as of it gives his score
    own_last = max(s for s in w.log_bytes() if w.fact_at(s).data.get("employee") == "son.truong")
    assert head.as_of == derived[-1] > own_last
    replay = Replay(ev.view)
    now = replay.score("son.truong", "2026-03")
    assert now.to_doc() == head.to_doc() and list(now.trace) == list(head.trace)
    at_reported = replay.score("son.truong", "2026-03", as_of=head.as_of)
    assert at_reported.to_doc() == now.to_doc()
    # as of the close: Lan failed, the head's task was halved; the diff cites the positions
    then = replay.score("son.truong", "2026-03", as_of=closed.seq)
    assert (then.total, then.grade, then.as_of) == (45, "fails", own_last)
    assert replay.score("son.truong", "2026-03", as_of=own_last).to_doc() == then.to_doc()
    difference = diff(then, now)
    assert {w: (b, a) for w, b, a in difference.changes}["total"] == ("45.0000", "80.0000")
    (old,) = [x for x in difference.only_before if x.subject == LAN]
    (new,) = [x for x in difference.only_after if x.subject == LAN]
    assert old.seq is not None and old.seq < closed.seq and "fails (total 45.0000)" in old.effect
    assert "below completed" in old.effect and "rulings" not in old.effect
    assert new == staff
    (factor,) = [x for x in difference.only_before if x.subject == "leader"]
    assert factor.effect == f"leader's unit: {LAN} below completed: task × 0.5"
    check_refolds(db_url, ev)
