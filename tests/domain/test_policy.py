"""Policies as data: the shipped packs, strict validation, periods, deadlines, the formula."""

from __future__ import annotations

import copy
import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.hr_decisions import Kind
from domain.policy import (
    FORMULA_VARIABLES,
    HR_DECISION_KINDS,
    SHIPPED_POLICIES,
    SHIPPED_RESOLVING_KINDS,
    Calendar,
    Formula,
    Policy,
    PolicyError,
    effective_policy,
    parse_policy,
    shipped_policy,
)
from signing.canonical import canonical_json, loads_strict

VN = dt.timezone(dt.timedelta(hours=7))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=VN)


@pytest.fixture(scope="module")
def default() -> Policy:
    return parse_policy(shipped_policy("default"))


@pytest.fixture(scope="module")
def khanh_hoa() -> Policy:
    return parse_policy(shipped_policy("khanh-hoa"))


def mutated(change: Callable[[dict[str, Any]], None], name: str = "default") -> dict[str, Any]:
    document = shipped_policy(name)
    change(document)
    return document


# module-level copies for hypothesis tests (function-scoped fixtures do not mix with @given)
DEFAULT = parse_policy(shipped_policy("default"))
QUARTERLY = parse_policy(mutated(lambda d: d.__setitem__("period", "quarter")))


# --------------------------------------------------------------------------------------------
# The shipped packs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED_POLICIES)
def test_shipped_packs_parse_and_can_be_signed(name: str) -> None:
    document = shipped_policy(name)
    policy = parse_policy(document)
    assert policy.version == 1
    assert policy.as_document() == document
    # published as a signed fact: must be acceptable canonical JSON (no floats, NFC strings)
    encoded = canonical_json({"scope": "vn", "document": document})
    assert loads_strict(encoded)["document"] == document
    assert unicodedata.is_normalized("NFC", policy.name + policy.criteria[0].name_vi)


def test_shipped_policy_returns_independent_copies() -> None:
    first = shipped_policy("default")
    first["version"] = 99
    first["grades"][0]["min"] = "1"
    first["calendar"]["holidays"].clear()
    second = shipped_policy("default")
    assert second["version"] == 1
    assert second["grades"][0]["min"] == "90"
    assert second["calendar"]["holidays"]
    assert first is not second


def test_unknown_shipped_policy() -> None:
    with pytest.raises(PolicyError, match="no shipped policy 'hanoi'") as info:
        shipped_policy("hanoi")
    assert info.value.path == "name"


def test_default_pack_reads_decree_335(default: Policy) -> None:
    assert default.id == "vn-decree-335-2025"
    assert default.effective_from == dt.date(2026, 1, 1)
    assert default.period == "month"
    assert (default.general_max, default.task_max) == (Decimal(30), Decimal(70))
    assert [c.code for c in default.criteria] == [
        "political",
        "ethics",
        "discipline",
        "competence",
        "innovation",
    ]
    assert sum(c.max for c in default.criteria) == default.general_max
    assert default.criteria[0].name_vi == "Phẩm chất chính trị"
    assert default.conversion == "products"
    assert default.deductions.quality_failure == Decimal("0.25")
    assert default.deductions.delay == Decimal("0.25")
    assert default.deductions.exemption_waives == {"quality_failure", "delay"}
    assert default.early_finish_bonus == 0
    assert [(g.code, g.min) for g in default.grades] == [
        ("excellent", Decimal(90)),
        ("good", Decimal(70)),
        ("completed", Decimal(50)),
        ("fails", Decimal(0)),
    ]
    assert default.overrides.conduct is not None
    assert default.overrides.conduct.grade == "fails"
    assert default.overrides.discipline is not None
    assert default.overrides.discipline.scope == "year"
    assert default.overrides.discipline.applies("reprimand")
    assert default.overrides.discipline.applies("dismissal")
    assert default.overrides.leader_unit_corruption is not None
    assert default.leader_unit is not None
    assert (default.leader_unit.met, default.leader_unit.otherwise) == (Decimal(1), Decimal("0.5"))
    assert default.quota is not None
    assert default.quota.max_ratio == Decimal("0.2")
    assert default.quota.per == ("agency", "task_group")
    assert default.quota.tie_break[-1].key == "employee_id"
    assert default.year.excluded_leave == {"sick", "maternity"}
    assert default.ranking_deadline(2026) == at(2026, 12, 15)
    assert (default.appeal_filing.days, default.appeal_filing.kind) == (5, "calendar")
    assert (default.appeal_answer.days, default.appeal_answer.kind) == (10, "working")
    assert default.second_review is False
    assert default.hr_decision.consecutive_failing_years == 2
    assert default.adjustable == {
        "political",
        "ethics",
        "discipline",
        "competence",
        "innovation",
        "general",
    }
    assert default.adjustment_max_abs == Decimal(5)
    assert default.score_places == 2
    assert default.spot_check_not_confirmed == "void"
    assert default.declaration_deadline("2026-03") is None


def test_khanh_hoa_pack(khanh_hoa: Policy) -> None:
    assert khanh_hoa.conversion == "hours"
    assert khanh_hoa.early_finish_bonus == Decimal("0.1")
    assert khanh_hoa.flags.hours_per_working_day == Decimal(8)
    assert khanh_hoa.declaration_deadline("2026-03") == at(2026, 3, 25)
    assert khanh_hoa.declaration is not None
    assert khanh_hoa.declaration.late_effect == "void"


def test_criterion_max(default: Policy) -> None:
    for code in ("political", "ethics", "discipline", "competence", "innovation"):
        assert default.criterion_max(code) == Decimal(6)
    assert default.criterion_max("general") == Decimal(30)
    assert default.criterion_max("task") == Decimal(70)
    with pytest.raises(PolicyError, match="unknown criterion 'charisma'") as info:
        default.criterion_max("charisma")
    assert info.value.path == "criterion"


# --------------------------------------------------------------------------------------------
# Scenario numbers through the formulas
# --------------------------------------------------------------------------------------------


def test_scenario_1_numbers_from_the_default_formula(default: Policy) -> None:
    q = Fraction(38, 40) * 100
    c = (38 - Fraction(1, 4)) / 40 * 100
    p = (38 - 3 * Fraction(1, 4)) / 40 * 100
    assert (q, c, p) == (Fraction(95), Fraction("94.375"), Fraction("93.125"))
    t = default.task_points(default.formula_values(Q=q, C=c, P=p))
    assert t == Fraction(791, 12)  # 65.91666...
    total = t + Fraction("23.5")
    assert total == Fraction(1073, 12)  # 89.41666...
    shown = (Decimal(total.numerator) / Decimal(total.denominator)).quantize(Decimal("0.0001"))
    assert shown == Decimal("89.4167")
    assert default.grade_of(total).code == "good"
    # scenario 2: +0.5, still good, nothing rounds up across 90
    assert default.grade_of(total + Fraction(1, 2)).code == "good"
    assert default.grade_of(total + Fraction(1, 2)) == default.grade("good")


def test_scenario_3_numbers(default: Policy) -> None:
    values = default.formula_values(Q=Fraction(100), C=Fraction("99.375"), P=Fraction("98.75"))
    t = default.task_points(values)
    assert t == Fraction("69.5625")
    assert default.grade_of(t + 24).code == "excellent"


def test_the_two_packs_give_different_numbers(default: Policy, khanh_hoa: Policy) -> None:
    values = {
        "Q": Fraction(95),
        "C": Fraction("94.375"),
        "P": Fraction("93.125"),
        "E": Fraction(25),
        "S": Fraction(100),
        "task_max": Fraction(70),
    }
    assert default.task_formula.evaluate(values) == Fraction(791, 12)
    assert khanh_hoa.task_formula.evaluate(values) == Fraction("65.953125")
    assert default.task_formula.evaluate(values) != khanh_hoa.task_formula.evaluate(values)
    # an early-finish bonus lifts C above 100: the Khánh Hòa formula caps at task_max
    boosted = {**values, "Q": Fraction(100), "C": Fraction(104), "P": Fraction(100)}
    assert khanh_hoa.task_formula.evaluate(boosted) == 70


def test_grade_of_classifies_the_exact_value(default: Policy) -> None:
    assert default.grade_of(Decimal("89.917")).code == "good"
    assert default.grade_of(Fraction(179999, 2000)).code == "good"
    assert default.grade_of(90).code == "excellent"
    assert default.grade_of(Decimal("69.99")).code == "completed"
    assert default.grade_of(50).code == "completed"
    assert default.grade_of(Decimal("49.99")).code == "fails"
    assert default.grade_of(0).code == "fails"
    with pytest.raises(PolicyError, match="exact"):
        default.grade_of(89.9)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="unknown grade"):
        default.grade("great")


def test_parse_score_respects_places(default: Policy) -> None:
    assert default.parse_score("0.5") == Decimal("0.5")
    assert default.parse_score("-1.25") == Decimal("-1.25")
    with pytest.raises(PolicyError, match="more than 2 decimal places") as info:
        default.parse_score("0.125", path="data.delta")
    assert info.value.path == "data.delta"
    with pytest.raises(PolicyError, match="not a decimal string"):
        default.parse_score("1e3")


def test_quota_allowed_rounding(default: Policy) -> None:
    """The "population" reading's rounding (the default pack reads "fixed_point":
    tests/projections/test_views.py counts it against a brute force)."""
    assert default.quota is not None and default.quota.reading == "fixed_point"
    population = parse_policy(mutated(_set(["quota", "reading"], "population"))).quota
    assert population is not None
    assert [population.allowed(n) for n in (0, 4, 5, 12, 14)] == [0, 0, 1, 2, 2]
    for rounding, expected in (("ceil", [0, 1, 1, 3, 3]), ("half_up", [0, 1, 1, 2, 3])):
        document = mutated(_set(["quota", "rounding"], rounding))
        document["quota"]["reading"] = "population"
        policy = parse_policy(document)
        assert policy.quota is not None
        assert [policy.quota.allowed(n) for n in (0, 4, 5, 12, 14)] == expected
    with pytest.raises(PolicyError):
        default.quota.allowed(-1)


# --------------------------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------------------------


def test_month_periods(default: Policy) -> None:
    assert default.period_of(dt.date(2026, 3, 31)) == "2026-03"
    assert default.period_bounds("2026-02") == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert default.period_bounds("2028-02") == (dt.date(2028, 2, 1), dt.date(2028, 2, 29))
    for bad in ("2026-13", "2026-00", "2026-3", "2026-Q1", "March", "0000-01"):
        with pytest.raises(PolicyError, match="month period") as info:
            default.period_bounds(bad)
        assert info.value.path == "period"


@pytest.fixture(scope="module")
def quarterly() -> Policy:
    return parse_policy(mutated(lambda d: d.__setitem__("period", "quarter")))


def test_quarter_periods(quarterly: Policy) -> None:
    assert quarterly.period_of(dt.date(2026, 1, 1)) == "2026-Q1"
    assert quarterly.period_of(dt.date(2026, 5, 3)) == "2026-Q2"
    assert quarterly.period_of(dt.date(2026, 9, 30)) == "2026-Q3"
    assert quarterly.period_of(dt.date(2026, 12, 31)) == "2026-Q4"
    assert quarterly.period_bounds("2026-Q1") == (dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert quarterly.period_bounds("2026-Q2") == (dt.date(2026, 4, 1), dt.date(2026, 6, 30))
    assert quarterly.period_bounds("2026-Q4") == (dt.date(2026, 10, 1), dt.date(2026, 12, 31))
    for bad in ("2026-Q0", "2026-Q5", "2026-03", "2026-q1", "2026Q1"):
        with pytest.raises(PolicyError, match="quarter period"):
            quarterly.period_bounds(bad)


def test_quarter_declaration_deadline() -> None:
    def change(d: dict[str, Any]) -> None:
        d["period"] = "quarter"
        d["declaration_deadline"]["month_offset"] = 1
        d["declaration_deadline"]["before_day"] = 5

    policy = parse_policy(mutated(change, "khanh-hoa"))
    assert policy.declaration_deadline("2026-Q1") == at(2026, 4, 5)
    assert policy.declaration_deadline("2026-Q4") == at(2027, 1, 5)


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_period_of_and_bounds_agree(day: dt.date) -> None:
    for policy in (DEFAULT, QUARTERLY):
        first, last = policy.period_bounds(policy.period_of(day))
        assert first <= day <= last
        assert policy.period_of(first) == policy.period_of(last) == policy.period_of(day)


# --------------------------------------------------------------------------------------------
# Calendar and deadlines
# --------------------------------------------------------------------------------------------


def test_appeal_filing_five_calendar_days(default: Policy) -> None:
    deadline = default.appeal_filing_deadline(at(2026, 4, 2, 10))
    assert deadline == at(2026, 4, 8)
    assert at(2026, 4, 5, 9) < deadline  # scenario 3: filed on 5 April, in time
    assert at(2026, 4, 7, 23, 59) < deadline  # 7 April is fine
    assert not at(2026, 4, 8, 0, 0) < deadline  # 8 April is late
    # the day is counted in Vietnam: 1 April 20:00 UTC is 2 April 03:00 in Hà Nội
    assert default.appeal_filing_deadline(dt.datetime(2026, 4, 1, 20, tzinfo=dt.UTC)) == deadline


def test_filing_deadline_rolls_forward_past_days_off(default: Policy) -> None:
    # 21 April + 5 = Sunday 26 April (Hùng Kings), Monday 27 is the day in lieu: 28 April
    assert default.appeal_filing_deadline(at(2026, 4, 21, 9)) == at(2026, 4, 29)
    no_roll = parse_policy(
        mutated(lambda d: d["appeals"]["filing"].__setitem__("roll_forward", False))
    )
    assert no_roll.appeal_filing_deadline(at(2026, 4, 21, 9)) == at(2026, 4, 27)


def test_appeal_answer_ten_working_days(default: Policy) -> None:
    # scenario 3: filed Sunday 5 April; 6-10 and 13-17 April are the ten working days
    assert default.appeal_answer_deadline(at(2026, 4, 5, 15)) == at(2026, 4, 18)
    # filed Friday 24 April: skips the weekend, 27 April (in lieu), 30 April, 1 May, weekends
    assert default.appeal_answer_deadline(at(2026, 4, 24, 15)) == at(2026, 5, 14)


def test_hr_decision_due(default: Policy) -> None:
    # 30 calendar days from 1 June 2026 = 1 July (a Wednesday)
    assert default.hr_decision_due(at(2026, 6, 1, 8)) == at(2026, 7, 2)


def test_which_hr_decisions_act_on_an_hr_due_item(default: Policy, khanh_hoa: Policy) -> None:
    """``hr_decision.resolving_kinds``: the shipped packs name the measures and "no action",
    never a reward, and a withdrawn or overturned decision acts on nothing; a document without
    the key keeps the rule logs were written under before it (any kind acts on the item, only
    a withdrawal undoes it); a pack may name others; the kinds are the domain's, each once, at
    least one."""
    assert get_args(Kind) == HR_DECISION_KINDS
    expected = ("transfer", "demotion", "dismissal", "no_action")
    assert default.hr_decision.resolving_kinds == expected == SHIPPED_RESOLVING_KINDS
    assert khanh_hoa.hr_decision.resolving_kinds == expected
    for pack in (default, khanh_hoa):
        rule = pack.hr_decision
        assert not rule.resolves("reward", "proposed")
        assert rule.resolves("dismissal", "proposed") and rule.resolves("no_action", "issued")
        assert not rule.resolves("dismissal", "withdrawn")
        assert not rule.resolves("dismissal", "overturned")
    absent = parse_policy(mutated(_delete(["hr_decision", "resolving_kinds"])))
    assert absent.hr_decision.resolving_kinds is None
    for kind in HR_DECISION_KINDS:
        assert absent.hr_decision.resolves(kind, "proposed")
        assert absent.hr_decision.resolves(kind, "issued")
        assert absent.hr_decision.resolves(kind, "overturned")  # as before the key
        assert not absent.hr_decision.resolves(kind, "withdrawn")
    only = parse_policy(mutated(_set(["hr_decision", "resolving_kinds"], ["dismissal"])))
    assert only.hr_decision.resolving_kinds == ("dismissal",)
    for value, path, message in (
        (["exile"], "document.hr_decision.resolving_kinds[0]", "must be one of 'transfer'"),
        ([], "document.hr_decision.resolving_kinds", "must not be empty"),
        (["dismissal", "dismissal"], "document.hr_decision.resolving_kinds[1]", "twice"),
        ("dismissal", "document.hr_decision.resolving_kinds", "expected a list"),
    ):
        with pytest.raises(PolicyError) as caught:
            parse_policy(mutated(_set(["hr_decision", "resolving_kinds"], value)))
        assert caught.value.path == path and message in str(caught.value), caught.value


def test_naive_times_are_refused(default: Policy) -> None:
    with pytest.raises(PolicyError, match="naive datetime"):
        default.appeal_filing_deadline(dt.datetime(2026, 4, 2, 10))


def test_calendar_working_days(default: Policy) -> None:
    cal = default.calendar
    assert cal.is_working_day(dt.date(2026, 4, 2))  # Thursday
    assert not cal.is_working_day(dt.date(2026, 4, 4))  # Saturday
    assert not cal.is_working_day(dt.date(2026, 2, 17))  # Tết
    assert not cal.is_working_day(dt.date(2026, 9, 2))  # National Day
    assert not cal.is_working_day(dt.date(2026, 1, 2))  # bridged Friday
    assert cal.is_working_day(dt.date(2026, 1, 10))  # the Saturday worked instead
    assert cal.add_days(dt.date(2026, 4, 2), 5, "calendar") == dt.date(2026, 4, 7)
    assert cal.add_days(dt.date(2026, 4, 3), 1, "working") == dt.date(2026, 4, 6)
    assert cal.add_days(dt.date(2026, 2, 13), 1, "working") == dt.date(2026, 2, 23)
    assert cal.add_days(dt.date(2026, 4, 4), 0, "working") == dt.date(2026, 4, 4)
    with pytest.raises(PolicyError, match="non-negative"):
        cal.add_days(dt.date(2026, 4, 2), -1, "calendar")
    with pytest.raises(PolicyError, match="unknown day kind 'business'"):
        cal.add_days(dt.date(2026, 4, 2), 1, "business")  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="at least one working weekday"):
        Calendar(frozenset(range(7)), frozenset(), frozenset(), VN)


@given(
    st.dates(min_value=dt.date(2025, 12, 1), max_value=dt.date(2027, 1, 31)),
    st.integers(min_value=1, max_value=40),
)
def test_working_days_are_counted_exactly(start: dt.date, days: int) -> None:
    cal = DEFAULT.calendar
    end = cal.add_days(start, days, "working")
    assert cal.is_working_day(end)
    span = [start + dt.timedelta(days=i) for i in range(1, (end - start).days + 1)]
    assert sum(cal.is_working_day(d) for d in span) == days


# --------------------------------------------------------------------------------------------
# Validation: every refusal names its path
# --------------------------------------------------------------------------------------------


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: list[str | int]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown top key", _set(["bonus"], "1"), "document.bonus", "unknown key 'bonus'"),
    ("unknown nested key", _set(["task", "extra"], 1), "document.task.extra", "unknown key"),
    ("missing key", _delete(["flags"]), "document.flags", "missing key 'flags'"),
    ("missing nested key", _delete(["score", "places"]), "document.score.places", "missing"),
    (
        "float decimal",
        _set(["score", "general_max"], 30.0),
        "document.score.general_max",
        "floats are not allowed",
    ),
    (
        "float integer",
        _set(["flags", "fast_approval_seconds"], 10.5),
        "document.flags.fast_approval_seconds",
        "floats are not allowed",
    ),
    (
        "float in a list",
        _set(["calendar", "weekend", 0], 6.0),
        "document.calendar.weekend[0]",
        "floats",
    ),
    (
        "decimal with comma",
        _set(["task", "delay_deduction"], "0,25"),
        "document.task.delay_deduction",
        "not a decimal string",
    ),
    (
        "decimal without leading digit",
        _set(["task", "delay_deduction"], ".25"),
        "document.task.delay_deduction",
        "not a decimal string",
    ),
    (
        "decimal with exponent",
        _set(["score", "task_max"], "7e1"),
        "document.score.task_max",
        "not a decimal string",
    ),
    (
        "decimal with plus",
        _set(["score", "task_max"], "+70"),
        "document.score.task_max",
        "not a decimal string",
    ),
    (
        "decimal as integer",
        _set(["score", "task_max"], 70),
        "document.score.task_max",
        "expected a decimal string",
    ),
    (
        "deduction above 1",
        _set(["task", "quality_failure_deduction"], "1.5"),
        "document.task.quality_failure_deduction",
        "at most 1",
    ),
    (
        "criteria not summing",
        _set(["general_criteria", 0, "max"], "7"),
        "document.general_criteria",
        "add up to 31, not score.general_max 30",
    ),
    (
        "duplicate criterion",
        _set(["general_criteria", 1, "code"], "political"),
        "document.general_criteria[1].code",
        "listed twice",
    ),
    (
        "reserved criterion code",
        _set(["general_criteria", 0, "code"], "general"),
        "document.general_criteria[0].code",
        "reserved",
    ),
    (
        "bad criterion code",
        _set(["general_criteria", 0, "code"], "Political Quality"),
        "document.general_criteria[0].code",
        "expected a code",
    ),
    (
        "thresholds not descending",
        _set(["grades", 1, "min"], "95"),
        "document.grades[1].min",
        "strictly descending",
    ),
    (
        "equal thresholds",
        _set(["grades", 2, "min"], "70"),
        "document.grades[2].min",
        "strictly descending",
    ),
    (
        "last grade above zero",
        _set(["grades", 3, "min"], "10"),
        "document.grades[3].min",
        "must start at",
    ),
    (
        "threshold above the maximum",
        _set(["grades", 0, "min"], "101"),
        "document.grades[0].min",
        "at most 100",
    ),
    (
        "unknown formula variable",
        _set(["task", "formula"], "task_max * (Q + X) / 200"),
        "document.task.formula",
        "unknown variable 'X' (known: C, E, P, Q, S, task_max) at position 17",
    ),
    (
        "formula syntax error",
        _set(["task", "formula"], "task_max * (Q + C + P / 300"),
        "document.task.formula",
        "expected ')', found the end of the formula at position 28",
    ),
    (
        "formula bad character",
        _set(["task", "formula"], "task_max * Q ^ 2"),
        "document.task.formula",
        "unexpected character '^' at position 14",
    ),
    (
        "formula above task_max",
        _set(["task", "formula"], "task_max * (Q + C + P) / 200"),
        "document.task.formula",
        "gives 105 with all inputs at their top, outside 0..task_max",
    ),
    (
        "formula divides by zero",
        _set(["task", "formula"], "task_max * Q / P"),
        "document.task.formula",
        "division by zero with all inputs 0",
    ),
    (
        "formula not a string",
        _set(["task", "formula"], 70),
        "document.task.formula",
        "must be a string",
    ),
    (
        "bad effective date",
        _set(["effective_from"], "2026-02-30"),
        "document.effective_from",
        "not a calendar date",
    ),
    (
        "date in another format",
        _set(["effective_from"], "01/01/2026"),
        "document.effective_from",
        "YYYY-MM-DD",
    ),
    (
        "bad holiday date",
        _set(["calendar", "holidays", 0, "date"], "2026-13-01"),
        "document.calendar.holidays[0].date",
        "not a calendar date",
    ),
    (
        "duplicate holiday",
        _set(["calendar", "holidays", 1, "date"], "2026-01-01"),
        "document.calendar.holidays[1].date",
        "listed twice",
    ),
    (
        "swap day on a weekday",
        _set(["calendar", "extra_working_days", 0, "date"], "2026-01-12"),
        "document.calendar.extra_working_days[0].date",
        "not a weekend day",
    ),
    (
        "unknown weekday",
        _set(["calendar", "weekend", 0], "caturday"),
        "document.calendar.weekend[0]",
        "weekday name",
    ),
    (
        "no working day",
        _set(
            ["calendar", "weekend"],
            ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        ),
        "document.calendar.weekend",
        "at least one working weekday",
    ),
    (
        "negative days",
        _set(["appeals", "filing", "days"], -5),
        "document.appeals.filing.days",
        "must be between 0 and 3660, found -5",
    ),
    (
        "too many days",
        _set(["hr_decision", "due", "days"], 100000),
        "document.hr_decision.due.days",
        "must be between 0 and 3660, found 100000",
    ),
    (
        "unknown day kind",
        _set(["appeals", "answer", "kind"], "business"),
        "document.appeals.answer.kind",
        "must be one of 'calendar', 'working'",
    ),
    (
        "days as a string",
        _set(["hr_decision", "due", "days"], "30"),
        "document.hr_decision.due.days",
        "expected an integer, found a string",
    ),
    ("boolean as integer", _set(["version"], True), "document.version", "found a boolean"),
    ("version zero", _set(["version"], 0), "document.version", "at least 1"),
    ("unknown format", _set(["format"], 2), "document.format", "unsupported format 2"),
    ("bad id", _set(["id"], "Decree 335"), "document.id", "identifier"),
    ("empty name", _set(["name"], " "), "document.name", "must not be empty"),
    (
        "unknown period kind",
        _set(["period"], "week"),
        "document.period",
        "one of 'month', 'quarter'",
    ),
    ("bad timezone", _set(["timezone_offset"], "+7"), "document.timezone_offset", "+07:00"),
    (
        "unknown conversion",
        _set(["task", "conversion"], "points"),
        "document.task.conversion",
        "'products', 'hours'",
    ),
    (
        "unknown waiver",
        _set(["task", "exemption_waives", 0], "discipline"),
        "document.task.exemption_waives[0]",
        "can waive",
    ),
    (
        "unknown spot-check effect",
        _set(["task", "spot_check_not_confirmed"], "fine"),
        "document.task.spot_check_not_confirmed",
        "'void', 'flag'",
    ),
    (
        "unknown adjustment target",
        _set(["adjustments", "targets", 0], "charisma"),
        "document.adjustments.targets[0]",
        "unknown adjustment target 'charisma'",
    ),
    (
        "adjustment bound zero",
        _set(["adjustments", "max_abs"], "0"),
        "document.adjustments.max_abs",
        "greater than 0",
    ),
    (
        "unknown grade in an override",
        _set(["overrides", "conduct", "grade"], "bad"),
        "document.overrides.conduct.grade",
        "unknown grade 'bad'",
    ),
    (
        "unknown discipline level",
        _set(["overrides", "discipline", "min_level"], "scolding"),
        "document.overrides.discipline.min_level",
        "unknown discipline level",
    ),
    (
        "unknown discipline scope",
        _set(["overrides", "discipline", "scope"], "career"),
        "document.overrides.discipline.scope",
        "'year', 'period'",
    ),
    (
        "leader factor above 1",
        _set(["leader_unit", "otherwise"], "2"),
        "document.leader_unit.otherwise",
        "at most 1",
    ),
    (
        "unknown quota population",
        _set(["quota", "of_grades", 1], "great"),
        "document.quota.of_grades[1]",
        "unknown grade 'great'",
    ),
    (
        "unknown quota grouping",
        _set(["quota", "per", 0], "province"),
        "document.quota.per[0]",
        "unknown grouping key",
    ),
    (
        "quota ratio above 1",
        _set(["quota", "max_ratio"], "1.2"),
        "document.quota.max_ratio",
        "at most 1",
    ),
    (
        "non-deterministic tie-break",
        _delete(["quota", "tie_break", 3]),
        "document.quota.tie_break[2].key",
        "must be 'employee_id'",
    ),
    (
        "demote to the same grade",
        _set(["quota", "demote_to"], "excellent"),
        "document.quota.demote_to",
        "must differ",
    ),
    (
        "unknown rounding",
        _set(["quota", "rounding"], "bankers"),
        "document.quota.rounding",
        "'floor', 'ceil', 'half_up'",
    ),
    (
        "ranking on 30 February",
        _set(["year", "ranking_deadline"], {"month": 2, "day": 30}),
        "document.year.ranking_deadline.day",
        "between 1 and 28",
    ),
    (
        "declaration day 31",
        _set(
            ["declaration_deadline"], {"before_day": 31, "month_offset": 0, "late_effect": "void"}
        ),
        "document.declaration_deadline.before_day",
        "between 1 and 28",
    ),
    (
        "flag hours above 24",
        _set(["flags", "hours_per_working_day"], "25"),
        "document.flags.hours_per_working_day",
        "at most 24",
    ),
    ("not an object", _set(["appeals"], [5, 10]), "document.appeals", "expected an object"),
]


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [pytest.param(change, path, message, id=label) for label, change, path, message in INVALID],
)
def test_invalid_documents_are_refused_with_their_path(
    change: Callable[[dict[str, Any]], None], path: str, message: str
) -> None:
    document = mutated(change)
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    assert info.value.path == path, str(info.value)
    assert message in info.value.message, str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_formula_errors_carry_the_position() -> None:
    document = mutated(_set(["task", "formula"], "task_max * (Q + C + P) / 300 )"))
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    assert info.value.path == "document.task.formula"
    assert info.value.position == 30


def test_a_document_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match="expected an object, found a list") as info:
        parse_policy([])
    assert info.value.path == "document"


def test_optional_sections_may_be_null() -> None:
    def change(d: dict[str, Any]) -> None:
        d["quota"] = None
        d["leader_unit"] = None
        d["overrides"] = {"conduct": None, "discipline": None, "leader_unit_corruption": None}

    policy = parse_policy(mutated(change))
    assert policy.quota is None
    assert policy.leader_unit is None
    assert policy.overrides.discipline is None


def _paths(value: Any, path: list[str | int]) -> list[list[str | int]]:
    out: list[list[str | int]] = []
    if isinstance(value, dict):
        out.append(path)
        for key, item in value.items():
            out.extend(_paths(item, [*path, key]))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, [*path, index]))
    return out


def _leaves(value: Any, path: list[str | int]) -> list[list[str | int]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, [*path, k])]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, [*path, i])]
    return [path]


def _dotted(path: list[str | int]) -> str:
    text = "document"
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


@given(st.sampled_from(_leaves(shipped_policy("khanh-hoa"), [])))
def test_a_float_anywhere_is_refused_at_its_path(path: list[str | int]) -> None:
    document = mutated(_set(path, 1.5), "khanh-hoa")
    with pytest.raises(PolicyError, match="floats are not allowed") as info:
        parse_policy(document)
    assert info.value.path == _dotted(path)


@given(st.sampled_from(_paths(shipped_policy("khanh-hoa"), [])))
def test_an_unknown_key_anywhere_is_refused_at_its_path(path: list[str | int]) -> None:
    document = mutated(_set([*path, "zz_unknown"], "x"), "khanh-hoa")
    with pytest.raises(PolicyError, match="unknown key 'zz_unknown'") as info:
        parse_policy(document)
    assert info.value.path == _dotted([*path, "zz_unknown"])


# --------------------------------------------------------------------------------------------
# The policy object
# --------------------------------------------------------------------------------------------


def test_policy_is_frozen_and_keeps_its_document(default: Policy) -> None:
    with pytest.raises(FrozenInstanceError):
        default.task_max = Decimal(80)  # type: ignore[misc]
    with pytest.raises(TypeError):
        default.document["version"] = 2  # type: ignore[index]
    assert default.document["task"]["formula"] == "task_max * (Q + C + P) / 300"
    assert hash(default) == hash(parse_policy(shipped_policy("default")))
    assert default == parse_policy(shipped_policy("default"))


def test_the_parsed_policy_does_not_share_the_callers_document() -> None:
    document = shipped_policy("default")
    policy = parse_policy(document)
    document["grades"][0]["min"] = "95"
    assert policy.document["grades"][0]["min"] == "90"


def test_effective_policy_picks_the_version_in_force(default: Policy) -> None:
    def v2(d: dict[str, Any]) -> None:
        d["version"] = 2
        d["effective_from"] = "2026-07-01"
        d["adjustments"]["max_abs"] = "3"

    second = parse_policy(mutated(v2))
    assert effective_policy([second, default], dt.date(2025, 12, 31)) is None
    assert effective_policy([second, default], dt.date(2026, 3, 1)) is default
    assert effective_policy([default, second], dt.date(2026, 7, 1)) is second

    def v3(d: dict[str, Any]) -> None:
        d["version"] = 3
        d["effective_from"] = "2026-07-01"

    third = parse_policy(mutated(v3))
    # the same day: the later publication wins
    assert effective_policy([default, second, third], dt.date(2026, 8, 1)) is third
    assert effective_policy([default, third, second], dt.date(2026, 8, 1)) is second
    assert effective_policy([default, second, third], dt.date(2026, 6, 30)) is default


# --------------------------------------------------------------------------------------------
# The formula language
# --------------------------------------------------------------------------------------------

VARIABLES = frozenset({"a", "b", "c"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("10 - 4 - 3", 3),
        ("24 / 4 / 2", 3),
        ("-2 * -3", 6),
        ("--2", 2),
        ("2 - -2", 4),
        ("1 / 3 + 1 / 6", Fraction(1, 2)),
        ("0.1 + 0.2", Fraction(3, 10)),
        ("min(3, max(1, 2), 5)", 2),
        ("max(-1, -2)", -1),
        ("a * b - c", 5),
        ("  a\t*\n(b)  ", 6),
    ],
)
def test_formula_values(text: str, value: Fraction | int) -> None:
    formula = Formula.parse(text, VARIABLES)
    assert formula.evaluate({"a": Fraction(2), "b": Fraction(3), "c": Fraction(1)}) == value


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 1, "the formula is empty"),
        ("1 +", 4, "expected a number, a variable or '(', found the end of the formula"),
        ("2 ** 3", 4, "expected a number, a variable or '(', found '*'"),
        ("a ^ 2", 3, "unexpected character '^'"),
        (".5 * a", 1, "write decimals as 0.5"),
        ("1. + a", 2, "unexpected character '.'"),
        ("a b", 3, "expected an operator, found 'b'"),
        ("(a + b", 7, "expected ')'"),
        ("a + b)", 6, "expected an operator, found ')'"),
        ("sqrt(a)", 1, "unknown function 'sqrt'"),
        ("min(a)", 1, "min() needs at least two arguments"),
        ("max + 1", 1, "max must be called"),
        ("a + d", 5, "unknown variable 'd' (known: a, b, c)"),
        ("+a", 1, "expected a number, a variable or '(', found '+'"),
        ("min(a,)", 7, "expected a number"),
        ("1e3", 2, "expected an operator, found 'e3'"),
    ],
)
def test_formula_syntax_errors_name_the_position(text: str, position: int, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Formula.parse(text, VARIABLES, path="document.task.formula")
    assert info.value.position == position, str(info.value)
    assert message in info.value.message, str(info.value)
    assert f"at position {position}" in info.value.message
    assert info.value.path == "document.task.formula"


def test_formula_nesting_is_bounded() -> None:
    for text in ("(" * 80 + "1" + ")" * 80, "-" * 80 + "1"):
        with pytest.raises(PolicyError, match="nested deeper"):
            Formula.parse(text, VARIABLES)
    with pytest.raises(PolicyError, match="longer than"):
        Formula.parse("1 + " * 1000 + "1", VARIABLES)


def test_formula_evaluation_errors() -> None:
    formula = Formula.parse("a / (b - c)", VARIABLES)
    assert formula.variables == {"a", "b", "c"}
    assert formula.evaluate({"a": Fraction(1), "b": Fraction(3), "c": Fraction(1)}) == Fraction(
        1, 2
    )
    with pytest.raises(PolicyError, match="division by zero"):
        formula.evaluate({"a": Fraction(1), "b": Fraction(2), "c": Fraction(2)})
    with pytest.raises(PolicyError, match="no value given for variable 'c'"):
        formula.evaluate({"a": Fraction(1), "b": Fraction(2)})
    with pytest.raises(PolicyError, match="must be a Fraction"):
        formula.evaluate({"a": 0.5, "b": Fraction(2), "c": Fraction(1)})  # type: ignore[dict-item]
    mixed: dict[str, Any] = {"a": Decimal("0.5"), "b": 2, "c": 1}
    assert formula.evaluate(mixed) == Fraction(1, 2)
    assert Formula.parse("task_max", FORMULA_VARIABLES).variables == {"task_max"}
    assert str(formula) == "a / (b - c)"


# Random expressions: the formula must agree with Python's own Fraction arithmetic.


@dataclass(frozen=True)
class Expr:
    text: str
    precedence: int  # 1: + -, 2: * /, 3: unary minus, 4: atom
    value: Fraction | None  # None: division by zero somewhere
    depth: int = 0  # nesting, an upper bound of the parser's (which refuses beyond 50)


ENV = {"a": Fraction(7, 3), "b": Fraction(-2), "c": Fraction(0)}


def _number() -> st.SearchStrategy[Expr]:
    def build(whole: int, places: int) -> Expr:
        text = (
            str(whole) if places == 0 else f"{whole // 10**places}.{whole % 10**places:0{places}d}"
        )
        return Expr(text, 4, Fraction(whole, 10**places))

    return st.builds(build, st.integers(0, 10**6), st.integers(0, 4))


def _variable() -> st.SearchStrategy[Expr]:
    return st.sampled_from(sorted(ENV)).map(lambda name: Expr(name, 4, ENV[name]))


def _wrap(child: Expr, needed: bool) -> str:
    return f"({child.text})" if needed else child.text


def _binary(op: str, left: Expr, right: Expr) -> Expr:
    prec = 1 if op in "+-" else 2
    text = f"{_wrap(left, left.precedence < prec)} {op} {_wrap(right, right.precedence <= prec)}"
    value: Fraction | None = None
    if left.value is not None and right.value is not None:
        if op == "+":
            value = left.value + right.value
        elif op == "-":
            value = left.value - right.value
        elif op == "*":
            value = left.value * right.value
        elif right.value != 0:
            value = left.value / right.value
    return Expr(text, prec, value, max(left.depth, right.depth) + 1)


def _negate(child: Expr) -> Expr:
    value = None if child.value is None else -child.value
    return Expr(f"-{_wrap(child, child.precedence < 3)}", 3, value, child.depth + 1)


def _call(function: str, args: list[Expr]) -> Expr:
    values = [a.value for a in args]
    value: Fraction | None = None
    if all(v is not None for v in values):
        known = [v for v in values if v is not None]
        value = min(known) if function == "min" else max(known)
    depth = max(a.depth for a in args) + 1
    return Expr(f"{function}({', '.join(a.text for a in args)})", 4, value, depth)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(_binary, st.sampled_from("+-*/"), children, children),
        st.builds(_negate, children),
        st.builds(
            _call, st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)
        ),
        children.map(lambda e: Expr(f"({e.text})", 4, e.value, e.depth + 1)),
    )


EXPRESSIONS = st.recursive(st.one_of(_number(), _variable()), _extend, max_leaves=12).filter(
    lambda e: e.depth <= 40
)


@settings(max_examples=300)
@given(EXPRESSIONS)
def test_formula_agrees_with_fraction_arithmetic(expr: Expr) -> None:
    formula = Formula.parse(expr.text, frozenset(ENV))
    if expr.value is None:
        with pytest.raises(PolicyError, match="division by zero"):
            formula.evaluate(ENV)
    else:
        assert formula.evaluate(ENV) == expr.value


@given(EXPRESSIONS)
def test_formula_variables_are_those_used(expr: Expr) -> None:
    formula = Formula.parse(expr.text, frozenset(ENV))
    assert formula.variables == {n for n in ENV if re.search(rf"\b{n}\b", expr.text)}


def test_policy_formula_values_defaults(default: Policy) -> None:
    values = default.formula_values(Q=Fraction(1), C=Fraction(2), P=Fraction(3))
    assert values == {
        "Q": 1,
        "C": 2,
        "P": 3,
        "E": 0,
        "S": Fraction(default.satisfaction_default),
        "task_max": 70,
    }
    assert copy.deepcopy(values) == values
