"""Appeals (kiến nghị / khiếu nại): filed, assigned to an independent reviewer, decided.

One stream per appellant (their docket). An appeal contests acts by their **log positions**:
the positions a civil servant reads in the trace of their score.

``appeal.filed`` ``{appeal, contested, grounds}``
    By the employee the contested acts concern. Contestable: a rejection, delay, quality
    failure or spot check of their work, an approved adjustment of their score, the close of a
    period (their classification), an HR decision proposed or issued about them. Filed before
    the policy's deadline, counted from the publication of the act: the close of its period
    (or the act itself when later, or for a close and an HR decision). An act under a pending
    appeal cannot be contested again, nor can a decided one or the decision itself when the
    policy allows no second review.
``appeal.assigned`` ``{appeal, appellant, reviewer}``
    By an HR officer covering the appellant; the reviewer holds the reviewer role over the
    appellant's unit and is independent: not the appellant, not the author of any contested
    act, not the proposer of a contested adjustment or HR decision.
``appeal.decided`` ``{appeal, appellant, rulings, reasons}``
    By the assigned reviewer (still independent): one ruling per contested act, ``upheld``
    (the act stands), ``overturned`` (it no longer counts) or ``exempted`` (a delay or quality
    failure with an objective cause: the deduction is waived). The ledger then appends one
    compensating ``*.ruling_applied`` fact per act not upheld, signed with its own key, right
    after the decision; nothing in the past is edited.
``appeal.withdrawn`` ``{appeal, appellant, reason}``
    By the appellant, before the decision.

The outcome, derived from the rulings: ``dismissed`` (all upheld), ``partly_granted``,
``granted`` (none upheld).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.assessment import ADJUSTMENT_APPROVED, Assessment, check_standing
from domain.context import Context, Derived, Handler, LoggedAct, Recording
from domain.errors import (
    ALREADY_CONTESTED,
    ALREADY_EXISTS,
    APPEAL_LATE,
    NOT_ASSIGNED,
    NOT_CONTESTABLE,
    NOT_INDEPENDENT,
    ROLE_MISSING,
    SECOND_REVIEW,
    UNKNOWN_REFERENCE,
    WRONG_STATE,
)
from domain.hr_decisions import DECISION_ISSUED, DECISION_PROPOSED, HrDecision
from domain.periods import CLOSED
from domain.policy import Policy
from domain.schemas import Code, FactData, Text, period_start
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id
from domain.work import DELAYED, QUALITY_FAILED, REJECTED, SPOT_CHECKED, WorkItem

FILED = "appeal.filed"
ASSIGNED = "appeal.assigned"
DECIDED = "appeal.decided"
WITHDRAWN = "appeal.withdrawn"

WORK_ACTS = (REJECTED, DELAYED, QUALITY_FAILED, SPOT_CHECKED)
EXEMPTABLE = (DELAYED, QUALITY_FAILED)
CONTESTABLE = (*WORK_ACTS, ADJUSTMENT_APPROVED, CLOSED, DECISION_PROPOSED, DECISION_ISSUED)


class FiledData(FactData):
    appeal: Code
    contested: list[int] = Field(min_length=1, max_length=100)
    grounds: Text


class AssignedData(FactData):
    appeal: Code
    appellant: Code
    reviewer: Code


class RulingItem(FactData):
    act: int
    ruling: Literal["upheld", "overturned", "exempted"]
    reason: Text


class DecidedData(FactData):
    appeal: Code
    appellant: Code
    rulings: list[RulingItem] = Field(min_length=1, max_length=100)
    reasons: Text


class WithdrawnData(FactData):
    appeal: Code
    appellant: Code
    reason: Text


@dataclass
class AppealRecord:
    id: str
    contested: tuple[int, ...]
    filed_at: dt.datetime
    status: str = "filed"  # assigned, decided, withdrawn
    reviewer: str = ""
    outcome: str = ""
    rulings: dict[int, str] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return self.status in ("filed", "assigned")


class Docket(SignedAggregate):
    """Every appeal one employee has filed."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({FILED, ASSIGNED, DECIDED, WITHDRAWN})

    class FirstFiled(SignedCreated):
        def apply(self, aggregate: Docket) -> None:
            aggregate.appellant = self.actor
            aggregate.file(self)

    class Filed(SignedEvent):
        def apply(self, aggregate: Docket) -> None:
            aggregate.file(self)

    class Assigned(SignedEvent):
        def apply(self, aggregate: Docket) -> None:
            record = aggregate.appeals[self.data["appeal"]]
            record.status = "assigned"
            record.reviewer = self.data["reviewer"]

    class Decided(SignedEvent):
        def apply(self, aggregate: Docket) -> None:
            record = aggregate.appeals[self.data["appeal"]]
            record.status = "decided"
            record.rulings = {int(r["act"]): r["ruling"] for r in self.data["rulings"]}
            record.outcome = outcome(record.rulings.values())
            aggregate.decisions.add(self.fact.nonce)

    class Withdrawn(SignedEvent):
        def apply(self, aggregate: Docket) -> None:
            aggregate.appeals[self.data["appeal"]].status = "withdrawn"

    def __init__(self) -> None:
        self.appellant = ""
        self.appeals: dict[str, AppealRecord] = {}
        self.decisions: set[str] = set()  # nonces of the decisions on this docket

    def file(self, event: SignedEvent) -> None:
        d = event.data
        self.appeals[d["appeal"]] = AppealRecord(
            d["appeal"], tuple(int(s) for s in d["contested"]), event.timestamp
        )

    def contesting(self, seq: int) -> AppealRecord | None:
        """The pending or decided appeal that contests the act at ``seq``."""
        for record in self.appeals.values():
            if seq in record.contested and record.status in ("filed", "assigned", "decided"):
                return record
        return None

    @staticmethod
    def id_for(employee: str) -> UUID:
        return stream_id("appeals", employee)


def outcome(rulings: Any) -> str:
    upheld = [r == "upheld" for r in rulings]
    if all(upheld):
        return "dismissed"
    return "partly_granted" if any(upheld) else "granted"


@dataclass(frozen=True)
class Contested:
    """A contested act with what the rules need to know about it."""

    act: LoggedAct
    subject: str  # the employee it concerns
    published_at: dt.datetime | None  # when the appeal deadline starts (None: not yet)
    policy: Policy
    involved: frozenset[str]  # who took part in it: never its reviewer
    derived_type: str
    target: dict[str, Any]


def _work_act(ctx: Context, act: LoggedAct) -> Contested:
    item = ctx.require(WorkItem, WorkItem.id_for(act.fact.data["item"]), "work item")
    record = item.acts.get(act.fact.nonce)
    if record is not None and (record.overturned or record.exempted):
        ctx.refuse(WRONG_STATE, f"the act at position {act.seq} was already overturned")
    start = period_start(item.period)
    unit = ctx.employee(item.employee).posting_on(start).unit
    periods = ctx.periods(ctx.agency_of(unit))
    close = periods.closes.get(item.period) if periods is not None else None
    published = max(close.at, act.fact.claimed_at) if close is not None else None
    return Contested(
        act,
        item.employee,
        published,
        ctx.policy(unit, start),
        frozenset({act.fact.actor}),
        "work.ruling_applied",
        {"item": item.item},
    )


def _adjustment(ctx: Context, act: LoggedAct) -> Contested:
    d = act.fact.data
    assessment = ctx.require(
        Assessment, Assessment.id_for(d["employee"], d["period"]), "assessment"
    )
    adjustment = assessment.adjustments[d["adjustment"]]
    if adjustment.overturned:
        ctx.refuse(WRONG_STATE, f"the adjustment at position {act.seq} was already overturned")
    start = period_start(d["period"])
    unit = ctx.employee(d["employee"]).posting_on(start).unit
    periods = ctx.periods(ctx.agency_of(unit))
    close = periods.closes.get(d["period"]) if periods is not None else None
    published = max(close.at, act.fact.claimed_at) if close is not None else None
    return Contested(
        act,
        d["employee"],
        published,
        ctx.policy(unit, start),
        frozenset({act.fact.actor, adjustment.proposed_by}),
        "score.ruling_applied",
        {"employee": d["employee"], "period": d["period"], "adjustment": d["adjustment"]},
    )


def _close(ctx: Context, act: LoggedAct, appellant: str) -> Contested:
    d = act.fact.data
    start = period_start(d["period"])
    unit = ctx.employee(appellant).posting_on(start).unit
    if ctx.agency_of(unit) != d["agency"]:
        ctx.refuse(NOT_CONTESTABLE, f"{appellant!r} was not in {d['agency']!r} in {d['period']}")
    return Contested(
        act,
        appellant,
        act.fact.claimed_at,
        ctx.policy(unit, start),
        frozenset({act.fact.actor}),
        "period.ruling_applied",
        {"agency": d["agency"], "period": d["period"], "employee": appellant},
    )


def _hr_decision(ctx: Context, act: LoggedAct) -> Contested:
    decision = ctx.require(HrDecision, HrDecision.id_for(act.fact.data["decision"]), "HR decision")
    if decision.status in ("overturned", "withdrawn"):
        ctx.refuse(WRONG_STATE, f"HR decision {decision.code!r} is {decision.status}")
    employee = ctx.employee(decision.employee)
    day = act.fact.claimed_at.date()
    return Contested(
        act,
        decision.employee,
        act.fact.claimed_at,
        ctx.policy(employee.posting_on(day).unit, day),
        frozenset({act.fact.actor, decision.proposed_by}),
        "hr.ruling_applied",
        {"decision": decision.code},
    )


def contested_act(ctx: Context, seq: int, appellant: str) -> Contested:
    """The act at ``seq`` as ``appellant`` contests it (a close concerns each appellant)."""
    act = ctx.logged(seq)
    if act is None:
        ctx.refuse(UNKNOWN_REFERENCE, f"no entry at log position {seq}")
    if act.type == DECIDED:
        ctx.refuse(SECOND_REVIEW, f"position {seq} is an appeal decision: no second review")
    if act.type not in CONTESTABLE:
        ctx.refuse(NOT_CONTESTABLE, f"position {seq} is a {act.type}: not an act one appeals")
    if act.type in WORK_ACTS:
        return _work_act(ctx, act)
    if act.type == ADJUSTMENT_APPROVED:
        return _adjustment(ctx, act)
    if act.type == CLOSED:
        return _close(ctx, act, appellant)
    return _hr_decision(ctx, act)


def _docket(ctx: Context, appellant: str) -> Docket | None:
    return ctx.get(Docket, Docket.id_for(appellant))


def file(ctx: Context, data: FiledData) -> Recording:
    ctx.employee(ctx.actor)
    docket = _docket(ctx, ctx.actor)
    if docket is not None and data.appeal in docket.appeals:
        ctx.refuse(ALREADY_EXISTS, f"appeal {data.appeal!r} exists")
    if len(set(data.contested)) != len(data.contested):
        ctx.refuse(WRONG_STATE, "contested names a position twice")
    for seq in data.contested:
        earlier = docket.contesting(seq) if docket is not None else None
        if earlier is not None and earlier.rulings.get(seq, "upheld") != "upheld":
            ctx.refuse(  # only an appeal overturns or exempts: the act was decided
                SECOND_REVIEW,
                f"the act at position {seq} was {earlier.rulings[seq]} in appeal"
                f" {earlier.id!r}: no second review",
            )
        contested = contested_act(ctx, seq, ctx.actor)
        if contested.subject != ctx.actor:
            ctx.refuse(
                NOT_CONTESTABLE,
                f"the act at position {seq} concerns {contested.subject!r}, not {ctx.actor!r}",
            )
        if earlier is not None and earlier.pending:
            ctx.refuse(
                ALREADY_CONTESTED, f"position {seq} is contested by pending appeal {earlier.id!r}"
            )
        if earlier is not None and not contested.policy.second_review:
            ctx.refuse(
                SECOND_REVIEW,
                f"the act at position {seq} was decided in appeal {earlier.id!r}:"
                " the policy allows no second review",
            )
        if contested.published_at is not None:
            deadline = contested.policy.appeal_filing_deadline(contested.published_at)
            if ctx.time >= deadline:
                ctx.refuse(
                    APPEAL_LATE,
                    f"the act at position {seq} was published {contested.published_at:%Y-%m-%d}:"
                    f" appeals were due before {deadline.isoformat()}",
                )
    if docket is None:
        return ctx.start(Docket, Docket.id_for(ctx.actor), Docket.FirstFiled)
    return ctx.append(docket, Docket.Filed)


def _appeal(ctx: Context, appellant: str, appeal: str) -> tuple[Docket, AppealRecord]:
    docket = _docket(ctx, appellant)
    record = docket.appeals.get(appeal) if docket is not None else None
    if docket is None or record is None:
        ctx.refuse(UNKNOWN_REFERENCE, f"no appeal {appeal!r} by {appellant!r}")
    return docket, record


def _contested(ctx: Context, appellant: str, record: AppealRecord) -> dict[int, Contested]:
    return {seq: contested_act(ctx, seq, appellant) for seq in record.contested}


def _check_independent(
    ctx: Context, who: str, appellant: str, contested: dict[int, Contested]
) -> None:
    if who == appellant:
        ctx.refuse(NOT_INDEPENDENT, f"{who!r} cannot review their own appeal")
    for seq, act in contested.items():
        if who in act.involved:
            ctx.refuse(
                NOT_INDEPENDENT,
                f"{who!r} took part in the contested act at position {seq}: not independent",
            )


def assign(ctx: Context, data: AssignedData) -> Recording:
    docket, record = _appeal(ctx, data.appellant, data.appeal)
    appellant = ctx.employee(data.appellant)
    ctx.require_role("hr", appellant.unit)
    if not record.pending:
        ctx.refuse(WRONG_STATE, f"appeal {data.appeal!r} is {record.status}")
    if not ctx.has_role(data.reviewer, "reviewer", appellant.unit):
        ctx.refuse(ROLE_MISSING, f"{data.reviewer!r} holds no reviewer role over the appellant")
    _check_independent(ctx, data.reviewer, data.appellant, _contested(ctx, data.appellant, record))
    return ctx.append(docket, Docket.Assigned)


def decide(ctx: Context, data: DecidedData) -> Recording:
    docket, record = _appeal(ctx, data.appellant, data.appeal)
    if not record.pending:
        ctx.refuse(WRONG_STATE, f"appeal {data.appeal!r} is {record.status}")
    acts = _contested(ctx, data.appellant, record)
    _check_independent(ctx, ctx.actor, data.appellant, acts)
    if record.status != "assigned" or record.reviewer != ctx.actor:
        ctx.refuse(
            NOT_ASSIGNED,
            f"appeal {data.appeal!r} is assigned to {record.reviewer or 'nobody yet'!r},"
            f" not {ctx.actor!r}",
        )
    ctx.require_role("reviewer", ctx.employee(data.appellant).unit)
    ruled = [r.act for r in data.rulings]
    if sorted(ruled) != sorted(record.contested):
        ctx.refuse(
            WRONG_STATE,
            f"rulings must name each contested position once: {sorted(record.contested)}",
        )
    derived = []
    lifted: dict[tuple[str, str], tuple[Policy, set[str]]] = {}  # adjustments overturned
    for ruling in data.rulings:
        contested = acts[ruling.act]
        if ruling.ruling == "exempted" and contested.act.type not in EXEMPTABLE:
            ctx.refuse(
                WRONG_STATE,
                f"only a delay or quality failure is exempted, not {contested.act.type}",
            )
        if ruling.ruling == "upheld":
            continue
        if contested.act.type == ADJUSTMENT_APPROVED:
            key = (contested.target["employee"], contested.target["period"])
            lifted.setdefault(key, (contested.policy, set()))[1].add(contested.act.fact.nonce)
        derived.append(
            Derived(
                contested.derived_type,
                {
                    "appeal": data.appeal,
                    "act": ruling.act,
                    "act_nonce": contested.act.fact.nonce,
                    "act_type": contested.act.type,
                    "ruling": ruling.ruling,
                    "target": contested.target,
                },
            )
        )
    for (employee, period), (policy, nonces) in lifted.items():
        # the adjustments left must keep the criteria within bounds without the lifted ones
        assessment = ctx.require(Assessment, Assessment.id_for(employee, period), "assessment")
        standing = [
            a
            for a in assessment.adjustments.values()
            if a.counts and a.approval_nonce not in nonces
        ]
        check_standing(ctx, policy, assessment.supervisor_scores or {}, standing)
    recording = ctx.append(docket, Docket.Decided)
    return Recording(recording.event, recording.aggregate, derived=tuple(derived))


def withdraw(ctx: Context, data: WithdrawnData) -> Recording:
    docket, record = _appeal(ctx, data.appellant, data.appeal)
    if ctx.actor != data.appellant:
        ctx.refuse(ROLE_MISSING, f"only {data.appellant!r} withdraws their appeal")
    if not record.pending:
        ctx.refuse(WRONG_STATE, f"appeal {data.appeal!r} is {record.status}")
    return ctx.append(docket, Docket.Withdrawn)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    FILED: (FiledData, file),
    ASSIGNED: (AssignedData, assign),
    DECIDED: (DecidedData, decide),
    WITHDRAWN: (WithdrawnData, withdraw),
}
