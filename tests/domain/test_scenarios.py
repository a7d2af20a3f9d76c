"""Scenarios 1-4 of ``../shared/spec/scenarios.md`` through the application service.

The projections (scores) come later. Here the domain must record every fact the stories need,
at the positions it answers, in stream order, and refuse what the stories say must be refused,
recording nothing. ``score`` is only a cross-check that the recorded facts carry the stories'
numbers: it reads the aggregates (now, or as they stood before a log position) and computes
Q, C, P, T and the grade with the numbers of the policy published in the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest

from domain.appeals import Docket
from domain.assessment import Assessment
from domain.conduct import Conduct
from domain.employees import Employee
from domain.errors import Refusal, ReplayRefused
from domain.hr_decisions import HrDecision
from domain.periods import Periods
from domain.policy import shipped_policy
from domain.publications import Catalogue, PolicyBook
from domain.schemas import period_start
from domain.service import Appended
from domain.work import DELAYED, QUALITY_FAILED, WorkItem
from signing.facts import read_fact
from tests.domain.world import LAN, MARCH, World, assignment, at, sha

ITEMS = [f"lan-03-{i:02d}" for i in range(40)]
CRITERIA = {
    "political": "5",
    "ethics": "5",
    "discipline": "4.5",
    "competence": "5",
    "innovation": "4",
}


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    """The standard organisation (``World.organise``) with Lan employed in its one-stop
    section; the clock in December 2025."""
    world = World(db_url)
    world.organise()
    world.employ(LAN)
    yield world
    world.service.close()


def recorded(
    w: World, appended: Appended, fact_type: str, actor: str, **data: Any
) -> dict[str, Any]:
    """The entry at ``appended.seq`` is this fact, in the stream and version answered."""
    entry = w.entry(appended.seq)
    fact = read_fact(entry.envelope, strict=False)
    assert (entry.stream, entry.version) == (appended.stream, appended.version)
    assert (fact.type, fact.actor, fact.nonce) == (fact_type, actor, appended.nonce)
    for key, value in data.items():
        assert fact.data[key] == value, (key, fact.data)
    return fact.data


def in_stream_order(w: World, stream: Sequence[Appended]) -> None:
    """The facts of one stream: increasing positions, versions 1, 2, 3..."""
    assert len({a.stream for a in stream}) == 1
    assert [a.version for a in stream] == list(range(1, len(stream) + 1))
    assert [a.seq for a in stream] == sorted(a.seq for a in stream)
    for a in stream:
        assert w.entry(a.seq).version == a.version


def assign(
    w: World,
    item: str,
    employee: str = LAN,
    period: str = MARCH,
    *,
    by: str = "tuan.sup",
    code: str = "OSS-01",
    due: str | None = None,
) -> Appended:
    return w.do(by, "work.assigned", assignment(item, employee, period, code=code, due=due))


def declare(w: World, item: str, who: str = LAN, **extra: Any) -> Appended:
    done_at = (w.now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return w.do(who, "work.declared", {"item": item, "done_at": done_at, **extra})


def assess(w: World, employee: str, period: str, scores: dict[str, str]) -> Appended:
    return w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": employee, "period": period, "scores": scores},
    )


def adjustment(
    adjustment: str, employee: str = LAN, delta: str = "0.5", criterion: str = "general"
) -> dict[str, str]:
    return {
        "adjustment": adjustment,
        "employee": employee,
        "period": MARCH,
        "criterion": criterion,
        "delta": delta,
        "reason": "Sáng kiến cải tiến quy trình một cửa được công nhận",
        "legal_basis": "Nghị định 335/2025/NĐ-CP",
    }


def decided(adjustment: str, employee: str = LAN) -> dict[str, str]:
    return {"adjustment": adjustment, "employee": employee, "period": MARCH}


def close(w: World, period: str, agency: str = "KH-W1", by: str = "hoa.hr") -> Appended:
    return w.do(by, "period.closed", {"agency": agency, "period": period, "snapshot": sha(period)})


@dataclass(frozen=True)
class Score:
    q: Fraction  # percent
    c: Fraction
    p: Fraction
    task: Fraction
    general: Fraction
    grade: str

    @property
    def total(self) -> Fraction:
        return self.task + self.general


def _deductions(item: WorkItem, fact_type: str, waiver: str, cover: str, waives: Any) -> int:
    """How many of the item's acts of ``fact_type`` still take points off."""
    if waiver in waives and cover in item.exempt:
        return 0
    return sum(
        1
        for a in item.acts.values()
        if a.type == fact_type and not a.overturned and not (a.exempted and waiver in waives)
    )


def score(
    w: World,
    items: Sequence[str] = ITEMS,
    employee: str = LAN,
    period: str = MARCH,
    *,
    before: int | None = None,
) -> Score:
    """Q, C, P (percent), T, the general total and the grade, from the aggregates as they
    stand (or stood before log position ``before``), with the published policy's numbers."""
    versions = w.versions_before(before) if before is not None else None

    def load(aggregate_id: Any) -> Any:
        return w.get(aggregate_id, None if versions is None else versions[aggregate_id])

    start = period_start(period)
    policy = load(PolicyBook.id_for("KH")).in_force(start)
    catalogue = load(Catalogue.id_for("KH-W1")).version_on(start)
    d = policy.deductions
    assigned = done = quality = progress = Fraction(0)
    for code in items:
        item = load(WorkItem.id_for(code))
        weight = Fraction(item.quantity) * Fraction(catalogue.items[item.code].products)
        assigned += weight
        if item.status != "approved":
            continue
        failures = _deductions(
            item, QUALITY_FAILED, "quality_failure", "quality", d.exemption_waives
        )
        delays = _deductions(item, DELAYED, "delay", "progress", d.exemption_waives)
        done += weight
        quality += weight * max(Fraction(0), 1 - failures * Fraction(d.quality_failure))
        progress += weight * max(Fraction(0), 1 - delays * Fraction(d.delay))
    q, c, p = (100 * x / assigned for x in (done, quality, progress))
    task = policy.task_points(policy.formula_values(Q=q, C=c, P=p))
    general = Fraction(load(Assessment.id_for(employee, period)).general_total())
    return Score(q, c, p, task, general, policy.grade_of(task + general).code)


@dataclass
class Month:
    assigned: list[Appended]
    declared: list[Appended]
    rejected: list[Appended]
    approved: list[Appended]
    quality: Appended
    delays: list[Appended]
    assessed: Appended


def ordinary_month(w: World) -> Month:
    """Scenario 1: Lan's March 2026 (40 items, 2 rejected, 1 quality failure, 3 delays)."""
    w.now = at("2026-03-02")
    assigned = [assign(w, item) for item in ITEMS]
    w.now = at("2026-03-21")
    declared = [declare(w, item, evidence=[sha(item)]) for item in ITEMS]
    rejected = [
        w.do("tuan.sup", "work.rejected", {"item": item, "reason": "evidence missing"})
        for item in ITEMS[:2]
    ]
    approved = [w.do("tuan.sup", "work.approved", {"item": item}) for item in ITEMS[2:]]
    quality = w.do(
        "tuan.sup",
        "work.quality_failed",
        {"item": ITEMS[2], "severity": "major", "reason": "sai mẫu biểu"},
    )
    delays = [
        w.do("tuan.sup", "work.delayed", {"item": item, "days": 1, "reason": "trả kết quả muộn"})
        for item in ITEMS[3:6]
    ]
    assessed = assess(w, LAN, MARCH, CRITERIA)
    return Month(assigned, declared, rejected, approved, quality, delays, assessed)


def bounded_adjustment(w: World) -> tuple[Appended, Appended]:
    """Scenario 2: +0.5 on Lan's general criteria, proposed by Hoa, approved by Minh."""
    w.now = at("2026-03-28")
    proposed = w.do("hoa.hr", "score.adjustment_proposed", adjustment("adj-1"))
    w.refused("hoa.hr", "score.adjustment_approved", decided("adj-1"), "separation.same_person")
    approved = w.do("minh.hr", "score.adjustment_approved", decided("adj-1"))
    return proposed, approved


# -- scenario 1 ------------------------------------------------------------------------------


def test_an_ordinary_month(w: World) -> None:
    m = ordinary_month(w)

    for i, item in enumerate(ITEMS):
        stream = [m.assigned[i], m.declared[i]]
        recorded(w, m.assigned[i], "work.assigned", "tuan.sup", item=item, employee=LAN)
        recorded(w, m.declared[i], "work.declared", LAN, item=item, evidence=[sha(item)])
        if i < 2:
            stream.append(m.rejected[i])
            recorded(w, m.rejected[i], "work.rejected", "tuan.sup", reason="evidence missing")
        else:
            stream.append(m.approved[i - 2])
            recorded(w, m.approved[i - 2], "work.approved", "tuan.sup", item=item)
        if i == 2:
            stream.append(m.quality)
            recorded(w, m.quality, "work.quality_failed", "tuan.sup", severity="major")
        if i in (3, 4, 5):
            stream.append(m.delays[i - 3])
            recorded(w, m.delays[i - 3], "work.delayed", "tuan.sup", item=item, days=1)
        in_stream_order(w, stream)
        assert stream[0].stream == str(WorkItem.id_for(item))
    recorded(w, m.assessed, "assessment.supervisor_assessed", "tuan.sup", scores=CRITERIA)

    items = [w.get(WorkItem.id_for(item)) for item in ITEMS]
    assert [i.status for i in items].count("approved") == 38
    assert [i.item for i in items if i.status == "rejected"] == ITEMS[:2]
    assert all(i.employee == LAN and i.period == MARCH and len(i.declarations) == 1 for i in items)
    assert sum(i.count(QUALITY_FAILED) for i in items) == 1
    assert sum(i.count(DELAYED) for i in items) == 3
    assert [i.count(DELAYED) for i in items[3:6]] == [1, 1, 1]
    assessment = w.get(Assessment.id_for(LAN, MARCH))
    assert assessment.supervisor == "tuan.sup" and assessment.general_total() == Fraction(47, 2)

    s = score(w)
    assert (s.q, s.c, s.p) == (Fraction(95), Fraction("94.375"), Fraction("93.125"))
    assert s.task == Fraction(791, 12) and s.general == Fraction("23.5")
    assert s.total == Fraction(1073, 12) and f"{float(s.total):.2f}" == "89.42"
    assert s.grade == "good"

    # what the story's actors may not do, each refused with nothing recorded
    w.refused(LAN, "work.approved", {"item": ITEMS[0]}, "separation.self_approval")
    w.refused("tuan.sup", "work.approved", {"item": ITEMS[5]}, "state.invalid")  # approved
    w.refused("tuan.sup", "work.approved", {"item": "nobody-knows"}, "reference.unknown")
    w.refused(
        "tuan.sup",
        "work.quality_failed",
        {"item": ITEMS[0], "severity": "major", "reason": "x"},
        "state.invalid",  # a rejected item has no quality to fail
    )
    w.refused(
        LAN,
        "work.assigned",
        assignment("self"),
        "role.missing",
    )
    for code in ("NOPE-01", "LEAD-01"):  # not in the catalogue; not for an officer
        w.refused(
            "tuan.sup",
            "work.assigned",
            assignment("x", code=code),
            "catalogue.unknown_item",
        )
    w.refused(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": MARCH, "scores": {**CRITERIA, "political": "6.5"}},
        "bound.exceeded",
    )
    w.person("khoa.sup")
    w.grant("khoa.sup", "supervisor", "KH-W2")
    w.refused("khoa.sup", "work.approved", {"item": ITEMS[0]}, "scope.outside")
    # a rejected item may be declared again (and then judged again); a declared one may not
    w.refused(
        LAN, "work.declared", {"item": ITEMS[5], "done_at": "2026-03-19T03:00:00Z"}, "state.invalid"
    )
    w.verify()


# -- scenario 2 ------------------------------------------------------------------------------


def test_a_bounded_adjustment(w: World) -> None:
    ordinary_month(w)
    proposed, approved = bounded_adjustment(w)
    recorded(w, proposed, "score.adjustment_proposed", "hoa.hr", delta="0.5", criterion="general")
    recorded(w, approved, "score.adjustment_approved", "minh.hr", adjustment="adj-1")
    assert proposed.stream == approved.stream == str(Assessment.id_for(LAN, MARCH))
    assessment = w.get(Assessment.id_for(LAN, MARCH))
    adj = assessment.adjustments["adj-1"]
    assert (adj.proposed_by, adj.approved_by, adj.status) == ("hoa.hr", "minh.hr", "approved")
    assert assessment.general_total() == 24
    s = score(w)
    assert s.total == Fraction(1079, 12) and s.total < 90 and s.grade == "good"
    assert f"{float(s.total):.4f}" == "89.9167"
    # the adjustment is decided once; Lan cannot approve anything about her own score
    w.refused("minh.hr", "score.adjustment_approved", decided("adj-1"), "state.invalid")
    w.refused(LAN, "score.adjustment_approved", decided("adj-1"), "role.missing")
    w.refused(LAN, "score.adjustment_proposed", adjustment("adj-x"), "separation.self_approval")
    w.refused("hoa.hr", "score.adjustment_proposed", adjustment("adj-1"), "reference.taken")
    w.refused(
        "hoa.hr", "score.adjustment_proposed", adjustment("adj-x", delta="5.5"), "bound.exceeded"
    )
    w.refused(
        "hoa.hr", "score.adjustment_proposed", adjustment("adj-x", delta="0.125"), "bound.exceeded"
    )

    # Mai's general criteria stand at 29.8: +0.5 is refused, nothing recorded
    w.employ("mai.tran")
    assess(w, "mai.tran", MARCH, {**{c: "6" for c in CRITERIA}, "innovation": "5.8"})
    assert w.get(Assessment.id_for("mai.tran", MARCH)).general_total() == Fraction("29.8")
    refusal = w.refused(
        "hoa.hr", "score.adjustment_proposed", adjustment("adj-m", "mai.tran"), "bound.exceeded"
    )
    assert "29.8" in refusal.detail and "30" in refusal.detail
    w.refused(
        "hoa.hr",
        "score.adjustment_proposed",
        adjustment("adj-m", "mai.tran", criterion="innovation"),
        "bound.exceeded",  # innovation 5.8 + 0.5 > 6, its own maximum
    )
    # Hùng stands at 29.2: two proposals of +0.5 each fit alone; the second approval does not
    w.employ("hung.le")
    assess(w, "hung.le", MARCH, {**{c: "6" for c in CRITERIA}, "innovation": "5.2"})
    w.do("hoa.hr", "score.adjustment_proposed", adjustment("adj-h1", "hung.le"))
    w.do("hoa.hr", "score.adjustment_proposed", adjustment("adj-h2", "hung.le"))
    w.do("minh.hr", "score.adjustment_approved", decided("adj-h1", "hung.le"))
    w.refused(
        "minh.hr", "score.adjustment_approved", decided("adj-h2", "hung.le"), "bound.exceeded"
    )
    hung = w.get(Assessment.id_for("hung.le", MARCH))
    assert hung.general_total() == Fraction("29.7")
    assert hung.adjustments["adj-h2"].status == "proposed"
    declined = w.do(
        "minh.hr",
        "score.adjustment_declined",
        {**decided("adj-h2", "hung.le"), "reason": "vượt mức tối đa"},
    )
    recorded(w, declined, "score.adjustment_declined", "minh.hr")
    assert w.get(Assessment.id_for("hung.le", MARCH)).adjustments["adj-h2"].status == "declined"
    w.verify()


# -- scenario 3 ------------------------------------------------------------------------------


def test_an_appeal_that_changes_the_grade(w: World) -> None:
    m = ordinary_month(w)
    bounded_adjustment(w)
    w.now = at("2026-03-31")
    w.refused(
        "hoa.hr",
        "period.closed",
        {"agency": "KH-W1", "period": MARCH, "snapshot": sha("x")},
        "period.not_ended",
    )
    w.now = at("2026-04-02")
    closed = close(w, MARCH)
    recorded(w, closed, "period.closed", "hoa.hr", agency="KH-W1", period=MARCH)
    assert w.get(Periods.id_for("KH-W1")).closes[MARCH].at == at("2026-04-02")
    w.refused(
        "tuan.sup",
        "work.delayed",
        {"item": ITEMS[6], "days": 1, "reason": "x"},
        "period.closed",
    )
    as_closed = score(w, before=closed.seq + 1)
    assert as_closed.total == Fraction(1079, 12) and as_closed.grade == "good"

    w.now = at("2026-04-05")
    rejections = [a.seq for a in m.rejected]
    contested = [*rejections, m.delays[0].seq]
    filed = w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": contested, "grounds": "g"})
    recorded(w, filed, "appeal.filed", LAN, contested=contested)
    w.refused(
        LAN,
        "appeal.filed",
        {"appeal": "ap-2", "contested": [m.delays[0].seq], "grounds": "g"},
        "appeal.already_contested",
    )
    w.refused(  # an appeal names acts about the appellant's own work
        "hoa.hr",
        "appeal.filed",
        {"appeal": "ap-x", "contested": [m.delays[1].seq], "grounds": "g"},
        "reference.unknown",  # Hoa is no employee
    )
    ap = {"appeal": "ap-1", "appellant": LAN}
    w.refused("tuan.sup", "appeal.assigned", {**ap, "reviewer": "an.rev"}, "role.missing")
    w.refused("hoa.hr", "appeal.assigned", {**ap, "reviewer": "minh.hr"}, "role.missing")
    w.grant("tuan.sup", "reviewer", "KH-W1", by="admin")  # holds the role, but is not independent
    w.refused(
        "hoa.hr", "appeal.assigned", {**ap, "reviewer": "tuan.sup"}, "separation.not_independent"
    )
    assigned = w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    recorded(w, assigned, "appeal.assigned", "hoa.hr", reviewer="an.rev")

    rulings = [
        {"act": rejections[0], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
        {"act": rejections[1], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
        {"act": m.delays[0].seq, "ruling": "exempted", "reason": "ngập lụt (bất khả kháng)"},
    ]
    decision = {**ap, "rulings": rulings, "reasons": "Kiến nghị có cơ sở"}
    w.refused("tuan.sup", "appeal.decided", decision, "separation.not_independent")
    w.person("chi.rev")
    w.grant("chi.rev", "reviewer", "KH")
    w.refused("chi.rev", "appeal.decided", decision, "appeal.not_assigned")
    w.refused(
        "an.rev",
        "appeal.decided",
        {**decision, "rulings": [{**r, "ruling": "exempted"} for r in rulings]},
        "state.invalid",  # a rejection is overturned or upheld, never exempted
    )
    w.refused("an.rev", "appeal.decided", {**decision, "rulings": rulings[:2]}, "state.invalid")

    before = w.log_bytes()
    originals = {seq: w.entry(seq).to_bytes() for seq in contested}
    w.now = at("2026-04-06")
    out = w.do("an.rev", "appeal.decided", decision)
    assert not out.duplicate
    recorded(w, out, "appeal.decided", "an.rev", appeal="ap-1")
    assert w.service.sealed.log_size() == out.seq + 4
    assert [d.seq for d in out.derived] == [out.seq + 1, out.seq + 2, out.seq + 3]
    ledger = w.service.ledger_signer
    assert ledger is not None
    for derived, ruling, act in zip(out.derived, rulings, [*m.rejected, m.delays[0]], strict=True):
        data = recorded(w, derived, "work.ruling_applied", ledger.name)
        fact = w.fact_at(derived.seq)
        assert fact.keyid == ledger.keyid and fact.time == w.fact_at(out.seq).time
        assert data["act"] == ruling["act"] and data["ruling"] == ruling["ruling"]
        assert data["act_nonce"] == act.nonce and data["appeal"] == "ap-1"
        assert derived.stream == act.stream  # compensates on the contested item's own stream
    # nothing was edited: every earlier entry is byte-identical
    after = w.log_bytes()
    assert {seq: after[seq] for seq in before} == before
    assert {seq: w.entry(seq).to_bytes() for seq in contested} == originals

    docket = w.get(Docket.id_for(LAN))
    record = docket.appeals["ap-1"]
    assert (record.status, record.reviewer, record.outcome) == ("decided", "an.rev", "granted")
    for item in ITEMS[:2]:
        wi = w.get(WorkItem.id_for(item))
        assert wi.status == "approved" and wi.count("work.rejected") == 0
    delayed = w.get(WorkItem.id_for(ITEMS[3]))
    assert delayed.acts[m.delays[0].nonce].exempted and delayed.count(DELAYED) == 1

    s = score(w)
    assert (s.q, s.c, s.p) == (Fraction(100), Fraction("99.375"), Fraction("98.75"))
    assert s.task == Fraction("69.5625") and s.total == Fraction("93.5625")
    assert s.grade == "excellent"
    assert score(w, before=closed.seq + 1) == as_closed  # the grade as of the close stays

    w.refused(  # the decision itself: no second review
        LAN,
        "appeal.filed",
        {"appeal": "ap-2", "contested": [out.seq], "grounds": "g"},
        "appeal.second_review",
    )
    for seq in (rejections[0], m.delays[0].seq):  # acts already decided: no second review
        w.refused(
            LAN,
            "appeal.filed",
            {"appeal": "ap-2", "contested": [seq], "grounds": "g"},
            "appeal.second_review",
        )
    w.refused(
        LAN,
        "appeal.filed",
        {"appeal": "ap-2", "contested": [out.derived[0].seq], "grounds": "g"},
        "appeal.not_contestable",
    )
    w.refused("an.rev", "appeal.decided", decision, "state.invalid")  # decided once

    # an upheld act is decided too: it cannot be appealed again
    second = {"appeal": "ap-2", "appellant": LAN}
    w.do(LAN, "appeal.filed", {"appeal": "ap-2", "contested": [m.delays[1].seq], "grounds": "g"})
    w.do("hoa.hr", "appeal.assigned", {**second, "reviewer": "an.rev"})
    upheld = w.do(
        "an.rev",
        "appeal.decided",
        {
            **second,
            "rulings": [{"act": m.delays[1].seq, "ruling": "upheld", "reason": "r"}],
            "reasons": "r",
        },
    )
    assert upheld.derived == ()
    assert w.get(Docket.id_for(LAN)).appeals["ap-2"].outcome == "dismissed"
    w.refused(
        LAN,
        "appeal.filed",
        {"appeal": "ap-3", "contested": [m.delays[1].seq], "grounds": "g"},
        "appeal.second_review",
    )
    # a withdrawn appeal is never decided
    third = {"appeal": "ap-3", "appellant": LAN}
    w.do(LAN, "appeal.filed", {"appeal": "ap-3", "contested": [m.delays[2].seq], "grounds": "g"})
    w.do("hoa.hr", "appeal.assigned", {**third, "reviewer": "an.rev"})
    w.refused("hoa.hr", "appeal.withdrawn", {**third, "reason": "r"}, "role.missing")
    w.do(LAN, "appeal.withdrawn", {**third, "reason": "đã được giải thích"})
    w.refused(
        "an.rev",
        "appeal.decided",
        {
            **third,
            "rulings": [{"act": m.delays[2].seq, "ruling": "overturned", "reason": "r"}],
            "reasons": "r",
        },
        "state.invalid",
    )
    assert w.get(Docket.id_for(LAN)).appeals["ap-3"].status == "withdrawn"

    w.now = at("2026-04-08")  # 5 days from the close on 2 April ran out on 7 April
    w.refused(
        LAN,
        "appeal.filed",
        {"appeal": "ap-4", "contested": [m.quality.seq], "grounds": "g"},
        "appeal.late",
    )
    w.verify()


# -- scenario 4 ------------------------------------------------------------------------------


def test_a_year_and_an_override(w: World) -> None:
    closes = []
    for month in range(1, 13):
        period = f"2026-{month:02d}"
        w.now = at(f"{period}-05")
        item = f"lan-{month:02d}"
        assign(w, item, period=period)
        declare(w, item)
        w.do("tuan.sup", "work.approved", {"item": item})
        assess(w, LAN, period, CRITERIA)
        if month == 9:
            w.now = at("2026-09-10")
            reprimand = {
                "discipline": "kt-1",
                "employee": LAN,
                "level": "reprimand",
                "decided_on": "2026-09-10",
                "legal_basis": "Nghị định 172/2025/NĐ-CP",
                "reason": "vi phạm quy chế",
            }
            w.refused("tuan.sup", "discipline.imposed", reprimand, "role.missing")
            imposed = w.do("hoa.hr", "discipline.imposed", reprimand)
        w.now = at(f"{2027 if month == 12 else 2026}-{month % 12 + 1:02d}-02")
        closes.append(close(w, period))
    in_stream_order(w, closes)
    periods = w.get(Periods.id_for("KH-W1"))
    assert sorted(periods.closes) == [f"2026-{m:02d}" for m in range(1, 13)]
    assert all(w.fact_at(c.seq).type == "period.closed" for c in closes)

    recorded(w, imposed, "discipline.imposed", "hoa.hr", level="reprimand", decided_on="2026-09-10")
    conduct = w.get(Conduct.id_for(LAN))
    assert conduct.disciplines["kt-1"].level == "reprimand"
    assert not conduct.disciplines["kt-1"].annulled
    policy = w.get(PolicyBook.id_for("KH")).in_force(dt.date(2026, 9, 10))
    rule = policy.overrides.discipline
    assert rule.applies("reprimand") and rule.scope == "year" and rule.grade == "fails"

    w.now = at("2027-01-20")
    annulment = {
        "discipline": "kt-1",
        "employee": LAN,
        "reason": "quyết định kỷ luật bị hủy",
        "legal_basis": "Bản án hành chính",
    }
    w.refused(LAN, "discipline.annulled", annulment, "separation.self_approval")
    annulled = w.do("minh.hr", "discipline.annulled", annulment)
    recorded(w, annulled, "discipline.annulled", "minh.hr", discipline="kt-1")
    in_stream_order(w, [imposed, annulled])
    w.refused("hoa.hr", "discipline.annulled", annulment, "state.invalid")
    w.refused(
        "hoa.hr", "discipline.annulled", {**annulment, "discipline": "kt-9"}, "reference.unknown"
    )
    # both states stay visible: the stream as of the reprimand, and as it stands now
    assert not w.get(Conduct.id_for(LAN), imposed.version).disciplines["kt-1"].annulled
    assert w.get(Conduct.id_for(LAN)).disciplines["kt-1"].annulled

    # HR officers are civil servants too, and never discipline themselves
    w.register("hoa.hr", "KH-W1")
    w.refused(
        "hoa.hr",
        "discipline.imposed",
        {
            "discipline": "kt-2",
            "employee": "hoa.hr",
            "level": "reprimand",
            "decided_on": "2027-01-20",
            "legal_basis": "b",
            "reason": "r",
        },
        "separation.self_approval",
    )
    w.refused(
        "minh.hr",
        "discipline.imposed",
        {
            "discipline": "kt-2",
            "employee": LAN,
            "level": "warning",
            "decided_on": "2027-02-20",
            "legal_basis": "b",
            "reason": "r",
        },
        "state.invalid",  # decided in the future
    )
    w.verify()


# -- HR decisions, transfers, leave, late entries, rule packs ----------------------------------


def test_an_hr_decision_rests_on_closed_periods_and_can_be_overturned(w: World) -> None:
    w.now = at("2026-03-05")
    close(w, "2026-01")
    close(w, "2026-02")
    proposal = {
        "decision": "hr-1",
        "employee": LAN,
        "kind": "dismissal",
        "grounds": ["2026-01", "2026-02"],
        "details": "Không hoàn thành nhiệm vụ",
    }
    w.refused(
        "hoa.hr",
        "hr.decision_proposed",
        {**proposal, "grounds": ["2026-02", "2026-03"]},
        "period.not_ended",
    )
    w.refused("tuan.sup", "hr.decision_proposed", proposal, "role.missing")
    w.refused(LAN, "hr.decision_proposed", proposal, "separation.self_approval")
    proposed = w.do("hoa.hr", "hr.decision_proposed", proposal)
    recorded(w, proposed, "hr.decision_proposed", "hoa.hr", grounds=["2026-01", "2026-02"])
    w.refused("hoa.hr", "hr.decision_proposed", proposal, "reference.taken")
    w.refused("hoa.hr", "hr.decision_issued", {"decision": "hr-1"}, "separation.same_person")

    w.now = at("2026-03-06")
    w.do(LAN, "appeal.filed", {"appeal": "ap-hr", "contested": [proposed.seq], "grounds": "g"})
    w.refused("minh.hr", "hr.decision_issued", {"decision": "hr-1"}, "appeal.already_contested")
    ap = {"appeal": "ap-hr", "appellant": LAN}
    w.do("minh.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    w.refused("minh.hr", "hr.decision_issued", {"decision": "hr-1"}, "appeal.already_contested")
    out = w.do(
        "an.rev",
        "appeal.decided",
        {
            **ap,
            "rulings": [{"act": proposed.seq, "ruling": "overturned", "reason": "r"}],
            "reasons": "r",
        },
    )
    ledger = w.service.ledger_signer
    assert ledger is not None
    (derived,) = out.derived
    assert derived.seq == out.seq + 1 and derived.stream == proposed.stream
    recorded(w, derived, "hr.ruling_applied", ledger.name, act=proposed.seq, ruling="overturned")
    assert w.get(HrDecision.id_for("hr-1")).status == "overturned"
    w.refused("minh.hr", "hr.decision_issued", {"decision": "hr-1"}, "state.invalid")
    w.refused(
        "minh.hr", "hr.decision_withdrawn", {"decision": "hr-1", "reason": "r"}, "state.invalid"
    )

    # an unappealed proposal is issued by someone else; another one withdrawn
    reward = {**proposal, "decision": "hr-2", "kind": "reward", "details": "Khen thưởng"}
    w.do("hoa.hr", "hr.decision_proposed", reward)
    issued = w.do("minh.hr", "hr.decision_issued", {"decision": "hr-2"})
    recorded(w, issued, "hr.decision_issued", "minh.hr")
    decision = w.get(HrDecision.id_for("hr-2"))
    assert (decision.status, decision.proposed_by, decision.issued_by) == (
        "issued",
        "hoa.hr",
        "minh.hr",
    )
    w.do("hoa.hr", "hr.decision_proposed", {**reward, "decision": "hr-3", "kind": "transfer"})
    w.do("hoa.hr", "hr.decision_withdrawn", {"decision": "hr-3", "reason": "r"})
    assert w.get(HrDecision.id_for("hr-3")).status == "withdrawn"
    w.refused("minh.hr", "hr.decision_issued", {"decision": "hr-3"}, "state.invalid")
    w.verify()


def test_a_transfer_and_a_maternity_leave(w: World) -> None:
    w.now = at("2026-03-20")
    move = {"employee": LAN, "unit": "KH-W2", "position": "officer", "since": "2026-04-01"}
    w.refused(
        "hoa.hr", "employee.transferred", {**move, "unit": "KH-W1", "reason": "r"}, "state.invalid"
    )  # the same agency: an assignment, not a transfer
    w.refused("tuan.sup", "employee.transferred", {**move, "reason": "r"}, "role.missing")
    transferred = w.do("hoa.hr", "employee.transferred", {**move, "reason": "luân chuyển"})
    recorded(w, transferred, "employee.transferred", "hoa.hr", unit="KH-W2")
    w.refused(
        "hoa.hr",
        "employee.transferred",
        {**move, "unit": "KH-W1-OSS", "since": "2026-03-01", "reason": "r"},
        "state.invalid",  # history is appended, not rewritten
    )
    leave = {
        "employee": LAN,
        "leave": "ts-1",
        "kind": "maternity",
        "start": "2026-05-01",
        "end": "2026-10-31",
    }
    recorded(
        w,
        w.do("hoa.hr", "employee.leave_recorded", leave),
        "employee.leave_recorded",
        "hoa.hr",
        kind="maternity",
    )
    w.refused("hoa.hr", "employee.leave_recorded", leave, "reference.taken")
    w.refused(
        "hoa.hr",
        "employee.leave_recorded",
        {**leave, "leave": "ts-2", "start": "2026-10-01", "end": "2026-11-30"},
        "state.invalid",  # overlaps
    )
    employee = w.get(Employee.id_for(LAN))
    assert employee.posting_on(dt.date(2026, 3, 15)).unit == "KH-W1-OSS"
    assert employee.posting_on(dt.date(2026, 4, 15)).unit == "KH-W2"
    assert [(lv.kind, lv.start, lv.end) for lv in employee.leaves] == [
        ("maternity", dt.date(2026, 5, 1), dt.date(2026, 10, 31))
    ]
    # March still belongs to the old unit; April's work to the new agency's supervisors
    assign(w, "lan-03-a")
    w.refused(
        "tuan.sup",
        "work.assigned",
        assignment("lan-04-a", period="2026-04"),
        "scope.outside",
    )
    w.verify()


def test_a_late_entry_needs_an_approved_request(w: World) -> None:
    w.employ("mai.tran")
    w.now = at("2026-01-20")
    assign(w, "lan-01", period="2026-01")
    declare(w, "lan-01")
    w.now = at("2026-02-02")
    close(w, "2026-01")
    w.now = at("2026-02-04")
    w.refused("tuan.sup", "work.approved", {"item": "lan-01"}, "period.closed")
    request = {
        "request": "le-1",
        "agency": "KH-W1",
        "period": "2026-01",
        "employee": LAN,
        "reason": "quên phê duyệt",
        "until": "2026-02-10T00:00:00Z",
    }
    w.refused("mai.tran", "period.late_entry_requested", request, "role.missing")
    w.do("hoa.hr", "period.late_entry_requested", request)
    w.refused(
        "tuan.sup", "work.approved", {"item": "lan-01", "late_entry": "le-1"}, "period.closed"
    )  # not approved yet
    approval = {"request": "le-1", "agency": "KH-W1"}
    w.refused("hoa.hr", "period.late_entry_approved", approval, "separation.same_person")
    w.refused("tuan.sup", "period.late_entry_approved", approval, "role.missing")
    approved = w.do("minh.hr", "period.late_entry_approved", approval)
    recorded(w, approved, "period.late_entry_approved", "minh.hr", request="le-1")
    w.refused("tuan.sup", "work.approved", {"item": "lan-01"}, "period.closed")  # not cited
    late = w.do("tuan.sup", "work.approved", {"item": "lan-01", "late_entry": "le-1"})
    recorded(w, late, "work.approved", "tuan.sup", late_entry="le-1")
    assert w.get(WorkItem.id_for("lan-01")).status == "approved"
    # the request covers Lan's January only, and only until it runs out
    assign_mai = assignment("mai-01", "mai.tran", "2026-01", late_entry="le-1")
    w.refused("tuan.sup", "work.assigned", assign_mai, "period.closed")
    w.now = at("2026-02-11")
    w.refused(
        "tuan.sup",
        "work.delayed",
        {"item": "lan-01", "days": 2, "reason": "r", "late_entry": "le-1"},
        "period.closed",
    )
    # Lan asks for herself; someone other than her approves
    w.do(
        LAN,
        "period.late_entry_requested",
        {**request, "request": "le-2", "until": "2026-02-20T00:00:00Z"},
    )
    w.do("hoa.hr", "period.late_entry_approved", {"request": "le-2", "agency": "KH-W1"})
    w.do(
        "tuan.sup",
        "work.delayed",
        {"item": "lan-01", "days": 2, "reason": "r", "late_entry": "le-2"},
    )
    w.verify()


def test_the_khanh_hoa_pack_refuses_a_declaration_from_the_25th(w: World) -> None:
    kh = w.do(
        "admin", "policy.published", {"scope": "KH-W2", "document": shipped_policy("khanh-hoa")}
    )
    recorded(w, kh, "policy.published", "admin", scope="KH-W2")
    w.person("khoa.sup")
    w.grant("khoa.sup", "supervisor", "KH-W2")
    # Lan is in KH-W1: the default pack (no declaration deadline)
    w.employ("mai.tran", unit="KH-W2")  # KH-W2: the Khánh Hòa pack
    policy = w.get(PolicyBook.id_for("KH-W2")).in_force(dt.date(2026, 3, 1))
    assert policy.id == "khanh-hoa-eoffice-kpi"
    assert w.get(PolicyBook.id_for("KH")).in_force(dt.date(2026, 3, 1)).declaration is None
    w.now = at("2026-03-02")
    for n in (1, 2):
        assign(w, f"lan-{n}")
        assign(w, f"mai-{n}", "mai.tran", by="khoa.sup")
    w.now = at("2026-03-24", hour=16)  # 23:00 on the 24th in Vietnam: still in time
    declare(w, "mai-1", who="mai.tran")
    w.now = at("2026-03-24", hour=17)  # 00:00 on the 25th in Vietnam
    refusal = w.refused(
        "mai.tran",
        "work.declared",
        {"item": "mai-2", "done_at": "2026-03-20T03:00:00Z"},
        "deadline.passed",
    )
    assert "2026-03-25" in refusal.detail
    w.now = at("2026-03-27")
    declare(w, "lan-1")  # the default pack accepts it
    w.refused(
        "mai.tran",
        "work.declared",
        {"item": "mai-2", "done_at": "2026-03-20T03:00:00Z"},
        "deadline.passed",
    )
    assert w.get(WorkItem.id_for("mai-2")).status == "assigned"
    assert w.get(WorkItem.id_for("lan-1")).status == "declared"
    w.verify()


# -- the service's answers ------------------------------------------------------------------


def test_duplicates_get_the_original_answer(w: World) -> None:
    w.now = at("2026-03-02")
    envelope = w.sign("tuan.sup", "work.assigned", assignment("i-1"))
    first = w.service.submit(envelope)
    size = w.service.sealed.log_size()
    again = w.service.submit(envelope)
    assert again.duplicate and not first.duplicate
    assert (again.seq, again.stream, again.version, again.nonce) == (
        first.seq,
        first.stream,
        first.version,
        first.nonce,
    )
    assert w.service.sealed.log_size() == size

    # the same actor's idempotency key: a new nonce, the same fact -> the original result
    data = {"item": "i-1", "done_at": "2026-03-01T03:00:00Z"}
    keyed = w.service.submit(w.sign(LAN, "work.declared", data, idempotency_key="decl-i-1"))
    retry = w.service.submit(w.sign(LAN, "work.declared", data, idempotency_key="decl-i-1"))
    assert retry.duplicate and (retry.seq, retry.nonce) == (keyed.seq, keyed.nonce)
    assert w.service.sealed.log_size() == size + 1
    # the same key for another fact is a conflict, recorded nowhere
    with_other = w.sign(LAN, "work.declared", {**data, "note": "khác"}, idempotency_key="decl-i-1")
    w.refused_raw(with_other, "idempotency.conflict")
    # another actor may use the same key for their own facts
    other = w.service.submit(
        w.sign("tuan.sup", "work.approved", {"item": "i-1"}, idempotency_key="decl-i-1")
    )
    assert not other.duplicate and other.seq == size + 1

    # the same within one batch
    twice = w.sign("tuan.sup", "work.assigned", assignment("i-2"))
    batch = [
        twice,
        twice,
        w.sign("tuan.sup", "work.assigned", assignment("i-3"), idempotency_key="k-3"),
        w.sign("tuan.sup", "work.assigned", assignment("i-3"), idempotency_key="k-3"),
        w.sign("tuan.sup", "work.assigned", assignment("i-4"), idempotency_key="k-4"),
        w.sign("tuan.sup", "work.assigned", assignment("i-5"), idempotency_key="k-4"),
        envelope,  # already in the log
    ]
    size = w.service.sealed.log_size()
    outcomes = w.service.submit_many(batch)
    assert len(outcomes) == len(batch)
    a2, a2_again, a3, a3_again, a4, conflict, old = outcomes
    assert isinstance(a2, Appended) and isinstance(a3, Appended) and isinstance(a4, Appended)
    assert isinstance(a2_again, Appended) and a2_again.duplicate and a2_again.seq == a2.seq
    assert isinstance(a3_again, Appended) and a3_again.duplicate and a3_again.seq == a3.seq
    assert isinstance(conflict, Refusal) and conflict.rule == "idempotency.conflict"
    assert isinstance(old, Appended) and old.duplicate and old.seq == first.seq
    assert [a2.seq, a3.seq, a4.seq] == [size, size + 1, size + 2]
    assert w.service.sealed.log_size() == size + 3
    # a nonce reused for another fact is a replay
    reused = w.sign("tuan.sup", "work.assigned", assignment("i-9"), nonce=first.nonce)
    replay = w.refused_raw(reused, "envelope.replayed")
    assert isinstance(replay, ReplayRefused) and replay.original_seq == first.seq
    w.verify()


def test_only_the_ledger_signs_derived_facts(w: World) -> None:
    w.now = at("2026-03-02")
    act = assign(w, "i-1")
    ruling = {
        "appeal": "ap-1",
        "act": act.seq,
        "act_nonce": act.nonce,
        "act_type": "work.assigned",
        "ruling": "overturned",
    }
    for fact_type, target in (
        ("work.ruling_applied", {"item": "i-1"}),
        ("score.ruling_applied", {"employee": LAN, "period": MARCH, "adjustment": "a"}),
        ("period.ruling_applied", {"agency": "KH-W1", "period": MARCH, "employee": LAN}),
        ("hr.ruling_applied", {"decision": "hr-1"}),
    ):
        for who in ("an.rev", "admin", LAN):
            w.refused(who, fact_type, {**ruling, "target": target}, "ledger.derived_only")
    assert w.get(WorkItem.id_for("i-1")).status == "assigned"


# -- compensating facts of every kind -------------------------------------------------------


def test_every_kind_of_overturn_is_a_compensating_fact(w: World) -> None:
    w.now = at("2026-03-02")
    assign(w, "lan-03-a")
    # a delay recorded before any verdict (found by test_properties: the ruling crashed)
    delay = w.do("tuan.sup", "work.delayed", {"item": "lan-03-a", "days": 2, "reason": "r"})
    assess(w, LAN, MARCH, CRITERIA)
    w.do("hoa.hr", "score.adjustment_proposed", adjustment("adj-1", delta="-1"))
    adj = w.do("minh.hr", "score.adjustment_approved", decided("adj-1"))
    assert w.get(Assessment.id_for(LAN, MARCH)).general_total() == Fraction("22.5")
    w.now = at("2026-04-01")
    closed = close(w, MARCH)
    w.now = at("2026-04-03")
    contested = [delay.seq, adj.seq, closed.seq]
    w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": contested, "grounds": "g"})
    ap = {"appeal": "ap-1", "appellant": LAN}
    for involved in ("hoa.hr", "minh.hr"):  # the proposer and the approver of the adjustment
        w.grant(involved, "reviewer", "KH-W1", by="admin")
        w.refused(
            "hoa.hr" if involved == "minh.hr" else "minh.hr",
            "appeal.assigned",
            {**ap, "reviewer": involved},
            "separation.not_independent",
        )
    w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    out = w.do(
        "an.rev",
        "appeal.decided",
        {
            **ap,
            "rulings": [{"act": seq, "ruling": "overturned", "reason": "r"} for seq in contested],
            "reasons": "r",
        },
    )
    ledger = w.service.ledger_signer
    assert ledger is not None
    kinds = ["work.ruling_applied", "score.ruling_applied", "period.ruling_applied"]
    for n, (derived, kind, seq) in enumerate(zip(out.derived, kinds, contested, strict=True)):
        assert derived.seq == out.seq + 1 + n
        recorded(w, derived, kind, ledger.name, act=seq, ruling="overturned", appeal="ap-1")
    item = w.get(WorkItem.id_for("lan-03-a"))
    assert item.status == "assigned" and item.count(DELAYED) == 0
    assessment = w.get(Assessment.id_for(LAN, MARCH))
    assert assessment.adjustments["adj-1"].overturned and assessment.general_total() == 23.5
    assert (MARCH, LAN) in w.get(Periods.id_for("KH-W1")).set_aside
    # a classification set aside is no ground for an HR decision
    w.refused(
        "hoa.hr",
        "hr.decision_proposed",
        {
            "decision": "hr-1",
            "employee": LAN,
            "kind": "demotion",
            "grounds": [MARCH],
            "details": "d",
        },
        "state.invalid",
    )
    w.verify()


def test_adjustments_keep_the_bounds_when_marks_change_or_are_overturned(w: World) -> None:
    """Found by test_properties: a later assessment, or an appeal lifting one adjustment, took
    a criterion past its maximum through the adjustments that still count."""
    w.now = at("2026-03-05")
    marks = {**CRITERIA, "innovation": "5.8"}
    assess(w, LAN, MARCH, marks)
    down = adjustment("adj-1", criterion="innovation", delta="-1")
    w.do("hoa.hr", "score.adjustment_proposed", down)
    lowered = w.do("minh.hr", "score.adjustment_approved", decided("adj-1"))
    w.do(
        "hoa.hr",
        "score.adjustment_proposed",
        adjustment("adj-2", criterion="innovation", delta="1.2"),
    )
    w.do("minh.hr", "score.adjustment_approved", decided("adj-2"))
    assert w.get(Assessment.id_for(LAN, MARCH)).value("innovation") == 6
    refusal = w.refused(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": MARCH, "scores": {**marks, "innovation": "6"}},
        "bound.exceeded",
    )
    assert "6.2" in refusal.detail
    w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": MARCH, "scores": {**marks, "political": "6"}},
    )
    w.now = at("2026-03-06")
    w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": [lowered.seq], "grounds": "g"})
    ap = {"appeal": "ap-1", "appellant": LAN}
    w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
    decision = {
        **ap,
        "rulings": [{"act": lowered.seq, "ruling": "overturned", "reason": "r"}],
        "reasons": "r",
    }
    w.refused("an.rev", "appeal.decided", decision, "bound.exceeded")  # innovation would be 7
    upheld = [{"act": lowered.seq, "ruling": "upheld", "reason": "r"}]
    assert w.do("an.rev", "appeal.decided", {**decision, "rulings": upheld}).derived == ()
    assessment = w.get(Assessment.id_for(LAN, MARCH))
    assert assessment.value("innovation") == 6 and assessment.general_total() == Fraction("26.5")
