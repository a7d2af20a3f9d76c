"""Periods: closing a month (or quarter) of an agency, and late entries after the close.

``period.closed`` ``{agency, period, snapshot}``
    By an HR officer covering the agency, once the period has ended. ``snapshot`` is the
    SHA-256 of the computed result published at the close (the projections define and check
    it); the close's time is the publication time from which appeal deadlines run.
``period.late_entry_requested`` ``{request, agency, period, employee, reason, until}``
    By the employee, a supervisor or an HR officer covering them, for a closed period.
``period.late_entry_approved`` ``{request, agency}``
    By an HR officer covering the agency who did not request it. Until ``until``, facts about
    that employee's work in that period may be recorded if they cite the request
    (``late_entry``); without it, every fact about a closed period is refused.
``period.ruling_applied`` (signed by the ledger only)
    An appeal set the appellant's classification of a closed period aside.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar, Literal
from uuid import UUID

from domain.context import Context, Handler, Recording
from domain.errors import (
    ALREADY_EXISTS,
    PERIOD_CLOSED,
    PERIOD_OPEN,
    SAME_PERSON,
    UNKNOWN_REFERENCE,
    WRONG_STATE,
    InvalidFact,
)
from domain.policy import Policy, PolicyError
from domain.schemas import Code, FactData, Instant, Period, RulingFields, Sha256, Text, period_start
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id
from signing.canonical import parse_time

CLOSED = "period.closed"
LATE_ENTRY_REQUESTED = "period.late_entry_requested"
LATE_ENTRY_APPROVED = "period.late_entry_approved"
RULING_APPLIED = "period.ruling_applied"


class ClosedData(FactData):
    agency: Code
    period: Period
    snapshot: Sha256


class LateEntryRequestedData(FactData):
    request: Code
    agency: Code
    period: Period
    employee: Code
    reason: Text
    until: Instant


class LateEntryApprovedData(FactData):
    request: Code
    agency: Code


class RulingTarget(FactData):
    agency: Code
    period: Period
    employee: Code


class RulingData(RulingFields):
    ruling: Literal["overturned"]
    target: RulingTarget


@dataclass(frozen=True)
class Close:
    period: str
    at: dt.datetime
    snapshot: str
    by: str


@dataclass
class LateEntry:
    request: str
    period: str
    employee: str
    requested_by: str
    until: dt.datetime
    approved: bool = False


class Periods(SignedAggregate):
    """The closes and late-entry requests of one agency."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset(
        {CLOSED, LATE_ENTRY_REQUESTED, LATE_ENTRY_APPROVED, RULING_APPLIED}
    )

    class FirstClosed(SignedCreated):
        def apply(self, aggregate: Periods) -> None:
            aggregate.agency = self.data["agency"]
            aggregate.close(self)

    class Closed(SignedEvent):
        def apply(self, aggregate: Periods) -> None:
            aggregate.close(self)

    class LateEntryRequested(SignedEvent):
        def apply(self, aggregate: Periods) -> None:
            d = self.data
            aggregate.late_entries[d["request"]] = LateEntry(
                d["request"], d["period"], d["employee"], self.actor, parse_time(d["until"])
            )

    class LateEntryApproved(SignedEvent):
        def apply(self, aggregate: Periods) -> None:
            aggregate.late_entries[self.data["request"]].approved = True

    class RulingApplied(SignedEvent):
        """An appeal set a classification of a closed period aside (derived by the ledger)."""

        def apply(self, aggregate: Periods) -> None:
            target = self.data["target"]
            aggregate.set_aside.add((target["period"], target["employee"]))

    def __init__(self) -> None:
        self.agency = ""
        self.closes: dict[str, Close] = {}
        self.late_entries: dict[str, LateEntry] = {}
        self.set_aside: set[tuple[str, str]] = set()

    def close(self, event: SignedEvent) -> None:
        period = event.data["period"]
        self.closes[period] = Close(period, event.timestamp, event.data["snapshot"], event.actor)

    @staticmethod
    def id_for(agency: str) -> UUID:
        return stream_id("periods", agency)


def period_policy(ctx: Context, unit: str, period: str) -> Policy:
    """The policy governing ``period`` for ``unit``; refuses a period of the wrong kind."""
    policy = ctx.policy(unit, period_start(period))
    try:
        policy.period_bounds(period)
    except PolicyError as exc:
        raise InvalidFact(f"data.period: {exc}", fact_type=ctx.fact_type, actor=ctx.actor) from None
    return policy


def check_open(
    ctx: Context, agency: str, period: str, employee: str, late_entry: str | None
) -> None:
    """Refuse a fact about ``employee``'s ``period`` once it is closed, unless it cites an
    approved late-entry request that is still running."""
    periods = ctx.periods(agency)
    if periods is None or period not in periods.closes:
        return
    if late_entry is None:
        ctx.refuse(
            PERIOD_CLOSED,
            f"period {period} of {agency!r} was closed on {periods.closes[period].at:%Y-%m-%d};"
            " a late entry needs an approved period.late_entry_requested",
        )
    request = periods.late_entries.get(late_entry)
    if request is None or request.period != period or request.employee != employee:
        ctx.refuse(
            PERIOD_CLOSED, f"late-entry request {late_entry!r} does not cover {employee} {period}"
        )
    if not request.approved:
        ctx.refuse(PERIOD_CLOSED, f"late-entry request {late_entry!r} is not approved")
    if ctx.time >= request.until:
        ctx.refuse(PERIOD_CLOSED, f"late-entry request {late_entry!r} ran out at {request.until}")


def close_period(ctx: Context, data: ClosedData) -> Recording:
    unit = ctx.unit(data.agency)
    if unit.kind != "agency":
        ctx.refuse(WRONG_STATE, f"unit {data.agency!r} is a {unit.kind}, not an agency")
    ctx.require_role("hr", data.agency)
    policy = period_policy(ctx, data.agency, data.period)
    last_day = policy.period_bounds(data.period)[1]
    if ctx.time.astimezone(policy.calendar.tz).date() <= last_day:
        ctx.refuse(PERIOD_OPEN, f"period {data.period} ends on {last_day}: it cannot close yet")
    periods = ctx.periods(data.agency)
    if periods is None:
        return ctx.start(Periods, Periods.id_for(data.agency), Periods.FirstClosed)
    if data.period in periods.closes:
        ctx.refuse(WRONG_STATE, f"period {data.period} of {data.agency!r} is already closed")
    return ctx.append(periods, Periods.Closed)


def request_late_entry(ctx: Context, data: LateEntryRequestedData) -> Recording:
    employee = ctx.employee(data.employee)
    ctx.unit(data.agency)
    periods = ctx.periods(data.agency)
    if periods is None or data.period not in periods.closes:
        ctx.refuse(WRONG_STATE, f"period {data.period} of {data.agency!r} is not closed")
    if data.request in periods.late_entries:
        ctx.refuse(ALREADY_EXISTS, f"late-entry request {data.request!r} exists")
    if data.until <= ctx.time:
        ctx.refuse(WRONG_STATE, "until must be after the request")
    start = period_start(data.period)
    unit = employee.posting_on(start).unit
    if ctx.agency_of(unit) != data.agency:
        ctx.refuse(
            UNKNOWN_REFERENCE, f"{data.employee!r} was not in {data.agency!r} in {data.period}"
        )
    if ctx.actor != data.employee:
        ctx.require_role("supervisor", unit, also=("hr",))
    return ctx.append(periods, Periods.LateEntryRequested)


def approve_late_entry(ctx: Context, data: LateEntryApprovedData) -> Recording:
    periods = ctx.periods(data.agency)
    request = periods.late_entries.get(data.request) if periods is not None else None
    if periods is None or request is None:
        ctx.refuse(UNKNOWN_REFERENCE, f"no late-entry request {data.request!r} in {data.agency!r}")
    ctx.require_role("hr", data.agency)
    if request.requested_by == ctx.actor:
        ctx.refuse(SAME_PERSON, "a late-entry request is approved by someone other than its author")
    if request.employee == ctx.actor:
        ctx.refuse(SAME_PERSON, "nobody approves a late entry for their own work")
    if request.approved:
        ctx.refuse(WRONG_STATE, f"late-entry request {data.request!r} is already approved")
    return ctx.append(periods, Periods.LateEntryApproved)


def apply_ruling(ctx: Context, data: RulingData) -> Recording:
    ctx.require_ledger()
    periods = ctx.periods(data.target.agency)
    if periods is None:
        ctx.refuse(UNKNOWN_REFERENCE, f"no closed periods for {data.target.agency!r}")
    return ctx.append(periods, Periods.RulingApplied)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    CLOSED: (ClosedData, close_period),
    LATE_ENTRY_REQUESTED: (LateEntryRequestedData, request_late_entry),
    LATE_ENTRY_APPROVED: (LateEntryApprovedData, approve_late_entry),
    RULING_APPLIED: (RulingData, apply_ruling),
}
