"""General criteria and score adjustments: one stream per employee and period.

``assessment.self_assessed`` ``{employee, period, scores}``
    The employee's own marks for every general criterion of the policy.
``assessment.supervisor_assessed`` ``{employee, period, scores}``
    The marks that count, by a supervisor covering the employee's unit (never their own);
    a later assessment before the close replaces an earlier one. Each mark lies between 0
    and the criterion's maximum, with at most the policy's decimal places.
``score.adjustment_proposed``
    ``{adjustment, employee, period, criterion, delta, reason, legal_basis}``
    By an HR officer covering the employee, on a criterion the policy lets adjust (one of the
    general criteria, ``general`` for their total, or ``task``); ``|delta|`` within the
    policy's bound, and the result within the criterion's maximum and the general total's.
``score.adjustment_approved`` ``{adjustment, employee, period}``
    By an HR officer: never the employee, and never the proposer when the policy asks for a
    second approver (``adjustments.second_approver``; both shipped packs do). The bounds are
    checked again against the adjustments approved in between.
``score.adjustment_declined`` ``{adjustment, employee, period, reason}``
    By a second HR officer; the adjustment never counts.
``score.ruling_applied`` (signed by the ledger only)
    An appeal overturned an approved adjustment: it no longer counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import (
    ALREADY_EXISTS,
    BOUND_EXCEEDED,
    ROLE_MISSING,
    SAME_PERSON,
    SELF_APPROVAL,
    UNKNOWN_REFERENCE,
    WRONG_STATE,
)
from domain.periods import check_open, period_policy
from domain.policy import Policy
from domain.schemas import Code, Dec, FactData, Period, RulingFields, Text, period_start
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

SELF_ASSESSED = "assessment.self_assessed"
SUPERVISOR_ASSESSED = "assessment.supervisor_assessed"
ADJUSTMENT_PROPOSED = "score.adjustment_proposed"
ADJUSTMENT_APPROVED = "score.adjustment_approved"
ADJUSTMENT_DECLINED = "score.adjustment_declined"
RULING_APPLIED = "score.ruling_applied"

GENERAL = "general"
TASK = "task"


class AssessedData(FactData):
    employee: Code
    period: Period
    scores: dict[Code, Dec] = Field(min_length=1, max_length=50)
    late_entry: Code | None = None


class ProposedData(FactData):
    adjustment: Code
    employee: Code
    period: Period
    criterion: Code
    delta: Dec
    reason: Text
    legal_basis: Text
    late_entry: Code | None = None


class DecidedData(FactData):
    adjustment: Code
    employee: Code
    period: Period
    late_entry: Code | None = None


class DeclinedData(DecidedData):
    reason: Text


class RulingTarget(FactData):
    employee: Code
    period: Period
    adjustment: Code


class RulingData(RulingFields):
    target: RulingTarget


@dataclass
class Adjustment:
    id: str
    criterion: str
    delta: Decimal
    proposed_by: str
    status: str = "proposed"  # approved, declined
    approved_by: str = ""
    approval_nonce: str = ""
    overturned: bool = False

    @property
    def counts(self) -> bool:
        return self.status == "approved" and not self.overturned


def _scores(data: dict[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in data["scores"].items()}


class Assessment(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset(
        {
            SELF_ASSESSED,
            SUPERVISOR_ASSESSED,
            ADJUSTMENT_PROPOSED,
            ADJUSTMENT_APPROVED,
            ADJUSTMENT_DECLINED,
            RULING_APPLIED,
        }
    )

    class Opened(SignedCreated):
        """The first fact of the stream: any of the types below."""

        def apply(self, aggregate: Assessment) -> None:
            aggregate.employee = self.data["employee"]
            aggregate.period = self.data["period"]
            _OPENERS[self.fact.type](aggregate, self)

    class SelfAssessed(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            aggregate.self_assessed(self)

    class SupervisorAssessed(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            aggregate.supervisor_assessed(self)

    class AdjustmentProposed(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            aggregate.adjustment_proposed(self)

    class AdjustmentApproved(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            adjustment = aggregate.adjustments[self.data["adjustment"]]
            adjustment.status = "approved"
            adjustment.approved_by = self.actor
            adjustment.approval_nonce = self.fact.nonce

    class AdjustmentDeclined(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            aggregate.adjustments[self.data["adjustment"]].status = "declined"

    class RulingApplied(SignedEvent):
        def apply(self, aggregate: Assessment) -> None:
            for adjustment in aggregate.adjustments.values():
                if adjustment.approval_nonce == self.data["act_nonce"]:
                    adjustment.overturned = True

    def __init__(self) -> None:
        self.employee = ""
        self.period = ""
        self.self_scores: dict[str, Decimal] = {}
        self.supervisor_scores: dict[str, Decimal] | None = None
        self.supervisor = ""
        self.adjustments: dict[str, Adjustment] = {}

    def self_assessed(self, event: SignedEvent) -> None:
        self.self_scores = _scores(event.data)

    def supervisor_assessed(self, event: SignedEvent) -> None:
        self.supervisor_scores = _scores(event.data)
        self.supervisor = event.actor

    def adjustment_proposed(self, event: SignedEvent) -> None:
        d = event.data
        self.adjustments[d["adjustment"]] = Adjustment(
            d["adjustment"], d["criterion"], Decimal(d["delta"]), event.actor
        )

    def value(self, criterion: str) -> Decimal:
        """A criterion's mark after the adjustments that count."""
        base = self.supervisor_scores or {}
        return base.get(criterion, Decimal(0)) + sum(
            (a.delta for a in self.adjustments.values() if a.counts and a.criterion == criterion),
            Decimal(0),
        )

    def general_total(self) -> Decimal:
        base = sum((self.supervisor_scores or {}).values(), Decimal(0))
        return base + sum(
            (a.delta for a in self.adjustments.values() if a.counts and a.criterion != TASK),
            Decimal(0),
        )

    @staticmethod
    def id_for(employee: str, period: str) -> UUID:
        return stream_id("assessment", f"{employee}/{period}")


_OPENERS: dict[str, Callable[[Assessment, SignedEvent], None]] = {
    SELF_ASSESSED: Assessment.self_assessed,
    SUPERVISOR_ASSESSED: Assessment.supervisor_assessed,
    ADJUSTMENT_PROPOSED: Assessment.adjustment_proposed,
}
_EVENTS: dict[str, type[SignedEvent]] = {
    SELF_ASSESSED: Assessment.SelfAssessed,
    SUPERVISOR_ASSESSED: Assessment.SupervisorAssessed,
    ADJUSTMENT_PROPOSED: Assessment.AdjustmentProposed,
}


@dataclass
class Subject:
    """The employee and period a fact is about, with where they worked then."""

    unit: str
    agency: str
    policy: Policy
    assessment: Assessment | None


def _subject(ctx: Context, employee_code: str, period: str, late_entry: str | None) -> Subject:
    employee = ctx.employee(employee_code)
    unit = employee.posting_on(period_start(period)).unit
    agency = ctx.agency_of(unit)
    policy = period_policy(ctx, unit, period)
    check_open(ctx, agency, period, employee_code, late_entry)
    found = ctx.get(Assessment, Assessment.id_for(employee_code, period))
    return Subject(unit, agency, policy, found)


def _record(ctx: Context, subject: Subject, employee: str, period: str) -> Recording:
    event = _EVENTS[ctx.fact_type]
    if subject.assessment is None:
        return ctx.start(Assessment, Assessment.id_for(employee, period), Assessment.Opened)
    return ctx.append(subject.assessment, event)


def _check_places(ctx: Context, policy: Policy, name: str, value: Decimal) -> None:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > policy.score_places:
        ctx.refuse(
            BOUND_EXCEEDED, f"{name} {value} has more than {policy.score_places} decimal places"
        )


def _check_scores(ctx: Context, policy: Policy, scores: dict[str, Decimal]) -> None:
    expected = [c.code for c in policy.criteria]
    missing = [c for c in expected if c not in scores]
    unknown = [c for c in scores if c not in expected]
    if missing or unknown:
        ctx.refuse(
            UNKNOWN_REFERENCE,
            f"scores must mark exactly the policy's criteria {expected}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else ""),
        )
    for code, value in scores.items():
        _check_places(ctx, policy, f"score {code}", value)
        maximum = policy.criterion_max(code)
        if not Decimal(0) <= value <= maximum:
            ctx.refuse(
                BOUND_EXCEEDED, f"criterion {code} is marked {value}: it lies in 0..{maximum}"
            )


def self_assess(ctx: Context, data: AssessedData) -> Recording:
    if ctx.actor != data.employee:
        ctx.refuse(ROLE_MISSING, f"only {data.employee!r} self-assesses")
    subject = _subject(ctx, data.employee, data.period, data.late_entry)
    _check_scores(ctx, subject.policy, dict(data.scores))
    return _record(ctx, subject, data.employee, data.period)


def supervisor_assess(ctx: Context, data: AssessedData) -> Recording:
    if ctx.actor == data.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot assess themselves as supervisor")
    subject = _subject(ctx, data.employee, data.period, data.late_entry)
    ctx.require_role("supervisor", subject.unit)
    _check_scores(ctx, subject.policy, dict(data.scores))
    if subject.assessment is not None:  # the adjustments that count apply to the new marks
        counting = [a for a in subject.assessment.adjustments.values() if a.counts]
        check_standing(ctx, subject.policy, dict(data.scores), counting)
    return _record(ctx, subject, data.employee, data.period)


def check_standing(
    ctx: Context, policy: Policy, scores: dict[str, Decimal], adjustments: list[Adjustment]
) -> None:
    """Refuse unless ``scores`` with ``adjustments`` keep every criterion and the general
    total within the policy's bounds."""
    for criterion in policy.criteria:
        deltas = [a.delta for a in adjustments if a.criterion == criterion.code]
        mark = scores.get(criterion.code, Decimal(0))
        if deltas and not Decimal(0) <= mark + sum(deltas, Decimal(0)) <= criterion.max:
            ctx.refuse(
                BOUND_EXCEEDED,
                f"criterion {criterion.code}: {_sum_text(mark, deltas)}, outside"
                f" 0..{criterion.max} (its maximum)",
            )
    deltas = [a.delta for a in adjustments if a.criterion != TASK]
    marks = sum(scores.values(), Decimal(0))
    if deltas and not Decimal(0) <= marks + sum(deltas, Decimal(0)) <= policy.general_max:
        ctx.refuse(
            BOUND_EXCEEDED,
            f"general criteria: {_sum_text(marks, deltas)}, outside 0..{policy.general_max}"
            " (their maximum)",
        )


def _sum_text(mark: Decimal, deltas: list[Decimal]) -> str:
    """``"marked 29.8, adjusted +0.5 = 30.3"``: how a bound was overshot."""
    total = mark + sum(deltas, Decimal(0))
    return f"marked {mark}, adjusted {' '.join(f'{d:+}' for d in deltas)} = {total}"


def _check_bounds(
    ctx: Context, policy: Policy, assessment: Assessment | None, adjustment: Adjustment
) -> None:
    """Refuse ``adjustment`` unless, with the adjustments that already count, every mark
    stays within its bounds."""
    if adjustment.criterion == TASK:
        return  # task points come from the work facts: the projection applies the maximum
    if assessment is None or assessment.supervisor_scores is None:
        ctx.refuse(WRONG_STATE, "no supervisor assessment to adjust for this period yet")
    counting = [a for a in assessment.adjustments.values() if a.counts and a is not adjustment]
    check_standing(ctx, policy, assessment.supervisor_scores, [*counting, adjustment])


def propose_adjustment(ctx: Context, data: ProposedData) -> Recording:
    if ctx.actor == data.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot adjust their own score")
    subject = _subject(ctx, data.employee, data.period, data.late_entry)
    ctx.require_role("hr", subject.unit)
    policy = subject.policy
    if data.criterion not in policy.adjustable:
        ctx.refuse(
            UNKNOWN_REFERENCE,
            f"criterion {data.criterion!r} is not adjustable under policy {policy.id}"
            f" v{policy.version} (adjustable: {sorted(policy.adjustable)})",
        )
    if data.delta == 0:
        ctx.refuse(WRONG_STATE, "an adjustment of 0 changes nothing")
    _check_places(ctx, policy, "delta", data.delta)
    if abs(data.delta) > policy.adjustment_max_abs:
        ctx.refuse(
            BOUND_EXCEEDED,
            f"|delta| {abs(data.delta)} exceeds the policy's bound {policy.adjustment_max_abs}",
        )
    if subject.assessment is not None and data.adjustment in subject.assessment.adjustments:
        ctx.refuse(ALREADY_EXISTS, f"adjustment {data.adjustment!r} exists")
    candidate = Adjustment(data.adjustment, data.criterion, data.delta, ctx.actor)
    _check_bounds(ctx, policy, subject.assessment, candidate)
    return _record(ctx, subject, data.employee, data.period)


def _pending(ctx: Context, data: DecidedData) -> tuple[Subject, Assessment, Adjustment]:
    subject = _subject(ctx, data.employee, data.period, data.late_entry)
    assessment = subject.assessment
    adjustment = assessment.adjustments.get(data.adjustment) if assessment else None
    if assessment is None or adjustment is None:
        ctx.refuse(
            UNKNOWN_REFERENCE,
            f"no adjustment {data.adjustment!r} for {data.employee!r} in {data.period}",
        )
    ctx.require_role("hr", subject.unit)
    if ctx.actor == adjustment.proposed_by and subject.policy.adjustment_second_approver:
        ctx.refuse(SAME_PERSON, "the second approver must not be the adjustment's proposer")
    if ctx.actor == data.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot approve an adjustment of their own score")
    if adjustment.status != "proposed":
        ctx.refuse(WRONG_STATE, f"adjustment {data.adjustment!r} is already {adjustment.status}")
    return subject, assessment, adjustment


def approve_adjustment(ctx: Context, data: DecidedData) -> Recording:
    subject, assessment, adjustment = _pending(ctx, data)
    _check_bounds(ctx, subject.policy, assessment, adjustment)
    return ctx.append(assessment, Assessment.AdjustmentApproved)


def decline_adjustment(ctx: Context, data: DeclinedData) -> Recording:
    _, assessment, _ = _pending(ctx, data)
    return ctx.append(assessment, Assessment.AdjustmentDeclined)


def apply_ruling(ctx: Context, data: RulingData) -> Recording:
    ctx.require_ledger()
    target = data.target
    assessment = ctx.require(
        Assessment, Assessment.id_for(target.employee, target.period), "assessment"
    )
    if not any(a.approval_nonce == data.act_nonce for a in assessment.adjustments.values()):
        ctx.refuse(WRONG_STATE, f"act {data.act} approved no adjustment of this assessment")
    return ctx.append(assessment, Assessment.RulingApplied)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    SELF_ASSESSED: (AssessedData, self_assess),
    SUPERVISOR_ASSESSED: (AssessedData, supervisor_assess),
    ADJUSTMENT_PROPOSED: (ProposedData, propose_adjustment),
    ADJUSTMENT_APPROVED: (DecidedData, approve_adjustment),
    ADJUSTMENT_DECLINED: (DeclinedData, decline_adjustment),
    RULING_APPLIED: (RulingData, apply_ruling),
}
