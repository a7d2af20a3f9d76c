"""Work: items assigned, declared done, approved or rejected, checked, delayed, exempted.

One stream per work item (``item`` is chosen by whoever assigns it). The facts, in the order
an item's life allows them:

``work.assigned`` ``{item, employee, code, period, due, quantity?}``
    A catalogue item (``code``, in the agency's catalogue version in force on the first day
    of ``period``, applicable to the employee's position) assigned by a supervisor covering
    the employee's unit, or by an integrating system covering it (a dossier received).
``work.declared`` ``{item, done_at, evidence?, hours?, note?}`` (kê khai)
    By the employee, or by the integrating system that assigned the item. After assignment
    or after a rejection; before the policy's declaration deadline if it sets one.
``work.approved`` ``{item}`` / ``work.rejected`` ``{item, reason}``
    By a supervisor covering the unit where the item was assigned (or the assigning system),
    never by the employee: no self-approval. Only a declared item.
``work.quality_failed`` ``{item, severity, reason}``
    A failed quality check on an approved item, by a supervisor or an inspector.
``work.delayed`` ``{item, days, reason}``
    A recorded delay, by a supervisor or the assigning system.
``work.exemption_granted`` ``{item, covers, authority, legal_basis, reason}``
    An objective-cause exemption (progress and/or quality deductions waived) by an HR officer.
``work.spot_checked`` ``{item, result, note?, evidence?}``
    An inspector's spot check of a declared or approved item: confirmed or not confirmed.
``work.ruling_applied`` (signed by the ledger only)
    An appeal decision's compensating event: the named act is overturned or exempted. The act
    itself stays in the log untouched.
``survey.rated`` ``{rating, employee, period, score, responses}``
    Citizen satisfaction for an employee's period, written by a satisfaction-survey system.

Every fact about an item of a closed period needs an approved late-entry request
(``late_entry``), except spot checks and ledger-derived facts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import (
    ALREADY_EXISTS,
    BOUND_EXCEEDED,
    DEADLINE_PASSED,
    NOT_IN_CATALOGUE,
    ROLE_MISSING,
    SELF_APPROVAL,
    WRONG_STATE,
)
from domain.periods import check_open, period_policy
from domain.publications import Catalogue
from domain.schemas import (
    Code,
    Day,
    Dec,
    FactData,
    Instant,
    Period,
    RulingFields,
    Sha256,
    Text,
    period_start,
)
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id
from signing.canonical import parse_time

ASSIGNED = "work.assigned"
DECLARED = "work.declared"
APPROVED = "work.approved"
REJECTED = "work.rejected"
QUALITY_FAILED = "work.quality_failed"
DELAYED = "work.delayed"
EXEMPTION_GRANTED = "work.exemption_granted"
SPOT_CHECKED = "work.spot_checked"
RULING_APPLIED = "work.ruling_applied"
SURVEY_RATED = "survey.rated"


class AssignedData(FactData):
    item: Code
    employee: Code
    code: Code
    period: Period
    due: Day
    quantity: Dec = Decimal(1)
    late_entry: Code | None = None


class DeclaredData(FactData):
    item: Code
    done_at: Instant
    evidence: list[Sha256] = Field(default_factory=list, max_length=50)
    hours: Dec | None = None
    note: Text | None = None
    late_entry: Code | None = None


class ItemData(FactData):
    item: Code
    late_entry: Code | None = None


class RejectedData(ItemData):
    reason: Text


class QualityFailedData(ItemData):
    severity: Literal["major", "minor"]
    reason: Text


class DelayedData(ItemData):
    days: int = Field(ge=1, le=3660)
    reason: Text


class ExemptionData(ItemData):
    covers: list[Literal["progress", "quality"]] = Field(min_length=1, max_length=2)
    authority: Text
    legal_basis: Text
    reason: Text


class SpotCheckedData(FactData):
    item: Code
    result: Literal["confirmed", "not_confirmed"]
    note: Text | None = None
    evidence: list[Sha256] = Field(default_factory=list, max_length=50)


class SurveyRatedData(FactData):
    rating: Code
    employee: Code
    period: Period
    score: Dec
    responses: int = Field(ge=1)


@dataclass
class Act:
    """A fact recorded on an item, as an appeal ruling can name it (by its nonce)."""

    type: str
    actor: str
    at: dt.datetime
    overturned: bool = False
    exempted: bool = False


@dataclass
class Declaration:
    nonce: str
    done_at: dt.datetime
    hours: Decimal | None
    evidence: tuple[str, ...]


class WorkItem(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset(
        {
            ASSIGNED,
            DECLARED,
            APPROVED,
            REJECTED,
            QUALITY_FAILED,
            DELAYED,
            EXEMPTION_GRANTED,
            SPOT_CHECKED,
            RULING_APPLIED,
        }
    )

    class Assigned(SignedCreated):
        def apply(self, aggregate: WorkItem) -> None:
            d = self.data
            aggregate.item = d["item"]
            aggregate.employee = d["employee"]
            aggregate.code = d["code"]
            aggregate.period = d["period"]
            aggregate.due = dt.date.fromisoformat(d["due"])
            aggregate.quantity = Decimal(d.get("quantity", "1"))
            aggregate.assigned_by = self.actor
            aggregate.status = "assigned"
            aggregate.act(self)

    class Declared(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            d = self.data
            aggregate.declarations.append(
                Declaration(
                    self.fact.nonce,
                    parse_time(d["done_at"]),
                    Decimal(d["hours"]) if d.get("hours") is not None else None,
                    tuple(d.get("evidence", ())),
                )
            )
            aggregate.status = "declared"
            aggregate.act(self)

    class Approved(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.status = "approved"
            aggregate.act(self)

    class Rejected(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.status = "rejected"
            aggregate.act(self)

    class QualityFailed(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.act(self)

    class Delayed(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.act(self)

    class ExemptionGranted(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.exempt.update(self.data["covers"])
            aggregate.act(self)

    class SpotChecked(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            aggregate.act(self)

    class RulingApplied(SignedEvent):
        def apply(self, aggregate: WorkItem) -> None:
            d = self.data
            act = aggregate.acts[d["act_nonce"]]
            if d["ruling"] == "exempted":
                act.exempted = True
                return
            act.overturned = True
            if act.type != REJECTED:  # a delay, quality failure or spot check: no verdict
                return
            verdicts = [n for n, a in aggregate.acts.items() if a.type in (APPROVED, REJECTED)]
            if verdicts[-1] == d["act_nonce"]:
                aggregate.status = "approved"

    def __init__(self) -> None:
        self.item = ""
        self.employee = ""
        self.code = ""
        self.period = ""
        self.due = dt.date.min
        self.quantity = Decimal(1)
        self.assigned_by = ""
        self.status = ""
        self.declarations: list[Declaration] = []
        self.acts: dict[str, Act] = {}
        self.exempt: set[str] = set()

    def act(self, event: SignedEvent) -> None:
        self.acts[event.fact.nonce] = Act(event.fact.type, event.actor, event.timestamp)

    def count(self, fact_type: str) -> int:
        return sum(1 for a in self.acts.values() if a.type == fact_type and not a.overturned)

    @staticmethod
    def id_for(item: str) -> UUID:
        return stream_id("work", item)


@dataclass
class ItemContext:
    """An item with the facts its rules need: where it sits and who may act on it."""

    item: WorkItem
    unit: str
    agency: str


def _item(ctx: Context, code: str) -> ItemContext:
    item = ctx.require(WorkItem, WorkItem.id_for(code), f"work item {code!r}")
    employee = ctx.employee(item.employee)
    unit = employee.posting_on(period_start(item.period)).unit
    return ItemContext(item, unit, ctx.agency_of(unit))


def _by_assigning_system(ctx: Context, where: ItemContext) -> bool:
    """Is the actor the integrating system that assigned the item (and still covers it)?"""
    return ctx.actor == where.item.assigned_by and ctx.has_role(ctx.actor, "integrator", where.unit)


def _open(ctx: Context, where: ItemContext, late_entry: str | None) -> None:
    check_open(ctx, where.agency, where.item.period, where.item.employee, late_entry)


def _not_own(ctx: Context, item: WorkItem, what: str) -> None:
    if ctx.actor == item.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot {what} their own work")


def _supervisor_or_system(ctx: Context, where: ItemContext) -> None:
    """A supervisor covering the unit, or the integrating system that assigned the item."""
    if not _by_assigning_system(ctx, where):
        ctx.require_role("supervisor", where.unit)


def assign(ctx: Context, data: AssignedData) -> Recording:
    if ctx.get(WorkItem, WorkItem.id_for(data.item)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"work item {data.item!r} already exists")
    employee = ctx.employee(data.employee)
    start = period_start(data.period)
    posting = employee.posting_on(start)
    agency = ctx.agency_of(posting.unit)
    ctx.require_role("supervisor", posting.unit, also=("integrator",))
    policy = period_policy(ctx, posting.unit, data.period)
    first, last = policy.period_bounds(data.period)
    if not first <= data.due <= last:
        ctx.refuse(WRONG_STATE, f"due {data.due} is outside period {data.period}")
    if data.quantity <= 0 or data.quantity > 10000:
        ctx.refuse(BOUND_EXCEEDED, f"quantity {data.quantity} must be > 0 and at most 10000")
    catalogue = ctx.get(Catalogue, Catalogue.id_for(agency))
    version = catalogue.version_on(start) if catalogue is not None else None
    if version is None:
        ctx.refuse(NOT_IN_CATALOGUE, f"{agency!r} has no catalogue in force on {start}")
    entry = version.items.get(data.code)
    if entry is None:
        ctx.refuse(
            NOT_IN_CATALOGUE,
            f"item {data.code!r} is not in {agency!r}'s catalogue version {version.version}",
        )
    if not entry.applies_to(posting.position):
        ctx.refuse(
            NOT_IN_CATALOGUE, f"item {data.code!r} does not apply to position {posting.position!r}"
        )
    check_open(ctx, agency, data.period, data.employee, data.late_entry)
    return ctx.start(WorkItem, WorkItem.id_for(data.item), WorkItem.Assigned)


def declare(ctx: Context, data: DeclaredData) -> Recording:
    where = _item(ctx, data.item)
    item = where.item
    if ctx.actor != item.employee and not _by_assigning_system(ctx, where):
        ctx.refuse(
            ROLE_MISSING,
            f"only {item.employee!r} (or the system that assigned it) declares item {item.item!r}",
        )
    if item.status not in ("assigned", "rejected"):
        ctx.refuse(WRONG_STATE, f"item {item.item!r} is {item.status}: it cannot be declared")
    if data.done_at > ctx.time:
        ctx.refuse(WRONG_STATE, f"done_at {data.done_at} is after the declaration itself")
    if data.hours is not None and not Decimal(0) < data.hours <= Decimal(1000):
        ctx.refuse(BOUND_EXCEEDED, f"hours {data.hours} must be > 0 and at most 1000")
    policy = ctx.policy(where.unit, period_start(item.period))
    deadline = policy.declaration_deadline(item.period)
    if deadline is not None and ctx.time >= deadline:
        ctx.refuse(
            DEADLINE_PASSED,
            f"declarations for {item.period} were due before {deadline.isoformat()}",
        )
    _open(ctx, where, data.late_entry)
    return ctx.append(item, WorkItem.Declared)


def _verdict(ctx: Context, data: ItemData, event: type[SignedEvent], what: str) -> Recording:
    where = _item(ctx, data.item)
    _not_own(ctx, where.item, what)
    _supervisor_or_system(ctx, where)
    if where.item.status != "declared":
        ctx.refuse(
            WRONG_STATE,
            f"item {data.item!r} is {where.item.status}: only a declared item is {what}d",
        )
    _open(ctx, where, data.late_entry)
    return ctx.append(where.item, event)


def approve(ctx: Context, data: ItemData) -> Recording:
    return _verdict(ctx, data, WorkItem.Approved, "approve")


def reject(ctx: Context, data: RejectedData) -> Recording:
    return _verdict(ctx, data, WorkItem.Rejected, "reject")


def fail_quality(ctx: Context, data: QualityFailedData) -> Recording:
    where = _item(ctx, data.item)
    _not_own(ctx, where.item, "quality-check")
    ctx.require_role("supervisor", where.unit, also=("inspector",))
    if where.item.status != "approved":
        ctx.refuse(WRONG_STATE, f"item {data.item!r} is {where.item.status}, not approved")
    _open(ctx, where, data.late_entry)
    return ctx.append(where.item, WorkItem.QualityFailed)


def delay(ctx: Context, data: DelayedData) -> Recording:
    where = _item(ctx, data.item)
    _not_own(ctx, where.item, "record a delay on")
    _supervisor_or_system(ctx, where)
    _open(ctx, where, data.late_entry)
    return ctx.append(where.item, WorkItem.Delayed)


def exempt(ctx: Context, data: ExemptionData) -> Recording:
    where = _item(ctx, data.item)
    _not_own(ctx, where.item, "exempt")
    ctx.require_role("hr", where.unit)
    if len(set(data.covers)) != len(data.covers):
        ctx.refuse(WRONG_STATE, "covers names a deduction twice")
    _open(ctx, where, data.late_entry)
    return ctx.append(where.item, WorkItem.ExemptionGranted)


def spot_check(ctx: Context, data: SpotCheckedData) -> Recording:
    where = _item(ctx, data.item)
    _not_own(ctx, where.item, "spot-check")
    ctx.require_role("inspector", where.unit)
    if where.item.status not in ("declared", "approved"):
        ctx.refuse(WRONG_STATE, f"item {data.item!r} is {where.item.status}: nothing to check")
    return ctx.append(where.item, WorkItem.SpotChecked)


class RulingTarget(FactData):
    item: Code


class RulingData(RulingFields):
    target: RulingTarget


def apply_ruling(ctx: Context, data: RulingData) -> Recording:
    ctx.require_ledger()
    item = ctx.require(WorkItem, WorkItem.id_for(data.target.item), "work item")
    if data.act_nonce not in item.acts:
        ctx.refuse(WRONG_STATE, f"act {data.act} is not on item {item.item!r}")
    return ctx.append(item, WorkItem.RulingApplied)


class SurveyRating(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({SURVEY_RATED})

    class Rated(SignedCreated):
        def apply(self, aggregate: SurveyRating) -> None:
            aggregate.employee = self.data["employee"]
            aggregate.period = self.data["period"]
            aggregate.score = Decimal(self.data["score"])
            aggregate.responses = int(self.data["responses"])

    def __init__(self) -> None:
        self.employee = ""
        self.period = ""
        self.score = Decimal(0)
        self.responses = 0

    @staticmethod
    def id_for(rating: str) -> UUID:
        return stream_id("rating", rating)


def rate(ctx: Context, data: SurveyRatedData) -> Recording:
    if ctx.get(SurveyRating, SurveyRating.id_for(data.rating)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"rating {data.rating!r} is already recorded")
    employee = ctx.employee(data.employee)
    unit = employee.posting_on(period_start(data.period)).unit
    ctx.require_role("integrator", unit)
    period_policy(ctx, unit, data.period)
    if not Decimal(0) <= data.score <= Decimal(100):
        ctx.refuse(BOUND_EXCEEDED, f"score {data.score} must be between 0 and 100")
    check_open(ctx, ctx.agency_of(unit), data.period, data.employee, None)
    return ctx.start(SurveyRating, SurveyRating.id_for(data.rating), SurveyRating.Rated)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    ASSIGNED: (AssignedData, assign),
    DECLARED: (DeclaredData, declare),
    APPROVED: (ItemData, approve),
    REJECTED: (RejectedData, reject),
    QUALITY_FAILED: (QualityFailedData, fail_quality),
    DELAYED: (DelayedData, delay),
    EXEMPTION_GRANTED: (ExemptionData, exempt),
    SPOT_CHECKED: (SpotCheckedData, spot_check),
    RULING_APPLIED: (RulingData, apply_ruling),
    SURVEY_RATED: (SurveyRatedData, rate),
}
