"""HR decisions: transfer, demotion, dismissal, reward or no action, resting on closed periods.

One stream per decision. No score ever decides anything by itself: a person proposes, another
issues, and the decision cites the closed-period results it rests on.

``hr.decision_proposed`` ``{decision, employee, kind, grounds, details, reasons?}``
    By an HR officer covering the employee (never about themselves). ``grounds`` lists the
    periods whose closed results the decision rests on: each must be closed for the agency
    the employee was in, and not set aside by an appeal. ``kind`` ``no_action`` is the
    explicit decision to take no measure (for example on an "HR decision due" item): it
    carries its ``reasons``, which no other kind carries (``fact.invalid`` otherwise).
``hr.decision_issued`` ``{decision}``
    By an HR officer other than the proposer, while no appeal against the proposal is
    pending and its grounds still stand.
``hr.decision_withdrawn`` ``{decision, reason}``
    By an HR officer covering the employee, before it is issued.
``hr.ruling_applied`` (signed by the ledger only)
    An appeal overturned the decision (proposed or issued): it is void.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import (
    ALREADY_CONTESTED,
    ALREADY_EXISTS,
    PERIOD_OPEN,
    SAME_PERSON,
    SELF_APPROVAL,
    WRONG_STATE,
    InvalidFact,
)
from domain.schemas import Code, FactData, Period, RulingFields, Text, period_start
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

DECISION_PROPOSED = "hr.decision_proposed"
DECISION_ISSUED = "hr.decision_issued"
DECISION_WITHDRAWN = "hr.decision_withdrawn"
RULING_APPLIED = "hr.ruling_applied"
NO_ACTION = "no_action"

#: the kinds of HR decision (a policy's ``hr_decision.resolving_kinds`` names some of them)
Kind = Literal["transfer", "demotion", "dismissal", "reward", "no_action"]


class ProposedData(FactData):
    decision: Code
    employee: Code
    kind: Kind
    grounds: list[Period] = Field(min_length=1, max_length=60)
    details: Text
    reasons: Text | None = None  # required for kind no_action, refused for the others


class IssuedData(FactData):
    decision: Code


class WithdrawnData(FactData):
    decision: Code
    reason: Text


class RulingTarget(FactData):
    decision: Code


class RulingData(RulingFields):
    ruling: Literal["overturned"]
    target: RulingTarget


class HrDecision(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset(
        {DECISION_PROPOSED, DECISION_ISSUED, DECISION_WITHDRAWN, RULING_APPLIED}
    )

    class Proposed(SignedCreated):
        def apply(self, aggregate: HrDecision) -> None:
            d = self.data
            aggregate.code = d["decision"]
            aggregate.employee = d["employee"]
            aggregate.kind = d["kind"]
            aggregate.grounds = tuple(d["grounds"])
            aggregate.proposed_by = self.actor
            aggregate.proposal_nonce = self.fact.nonce
            aggregate.status = "proposed"

    class Issued(SignedEvent):
        def apply(self, aggregate: HrDecision) -> None:
            aggregate.status = "issued"
            aggregate.issued_by = self.actor

    class Withdrawn(SignedEvent):
        def apply(self, aggregate: HrDecision) -> None:
            aggregate.status = "withdrawn"

    class RulingApplied(SignedEvent):
        def apply(self, aggregate: HrDecision) -> None:
            aggregate.status = "overturned"

    def __init__(self) -> None:
        self.code = ""
        self.employee = ""
        self.kind = ""
        self.grounds: tuple[str, ...] = ()
        self.proposed_by = ""
        self.proposal_nonce = ""
        self.issued_by = ""
        self.status = ""

    @staticmethod
    def id_for(decision: str) -> UUID:
        return stream_id("hr-decision", decision)


def _check_grounds(ctx: Context, employee_code: str, grounds: tuple[str, ...] | list[str]) -> None:
    employee = ctx.employee(employee_code)
    for period in grounds:
        agency = ctx.agency_of(employee.posting_on(period_start(period)).unit)
        periods = ctx.periods(agency)
        if periods is None or period not in periods.closes:
            ctx.refuse(
                PERIOD_OPEN, f"ground {period} is not closed for {agency!r}: no result to cite"
            )
        if (period, employee_code) in periods.set_aside:
            ctx.refuse(
                WRONG_STATE, f"the {period} classification of {employee_code!r} was set aside"
            )


def propose(ctx: Context, data: ProposedData) -> Recording:
    if (data.kind == NO_ACTION) != (data.reasons is not None):
        problem = "required" if data.reasons is None else "only a no_action decision has it"
        raise InvalidFact(
            f"{ctx.fact_type}: data.reasons: {problem} (kind {data.kind!r})",
            fact_type=ctx.fact_type,
            actor=ctx.actor,
        )
    if ctx.get(HrDecision, HrDecision.id_for(data.decision)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"HR decision {data.decision!r} exists")
    if ctx.actor == data.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot propose an HR decision about themselves")
    employee = ctx.employee(data.employee)
    ctx.require_role("hr", employee.unit)
    if len(set(data.grounds)) != len(data.grounds):
        ctx.refuse(WRONG_STATE, "grounds names a period twice")
    _check_grounds(ctx, data.employee, data.grounds)
    return ctx.start(HrDecision, HrDecision.id_for(data.decision), HrDecision.Proposed)


def _decision(ctx: Context, code: str) -> HrDecision:
    decision = ctx.require(HrDecision, HrDecision.id_for(code), f"HR decision {code!r}")
    ctx.require_role("hr", ctx.employee(decision.employee).unit)
    if decision.status != "proposed":
        ctx.refuse(WRONG_STATE, f"HR decision {code!r} is {decision.status}")
    return decision


def issue(ctx: Context, data: IssuedData) -> Recording:
    from domain.appeals import Docket

    decision = _decision(ctx, data.decision)
    if ctx.actor == decision.proposed_by:
        ctx.refuse(SAME_PERSON, "an HR decision is issued by someone other than its proposer")
    if ctx.actor == decision.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot issue an HR decision about themselves")
    docket = ctx.get(Docket, Docket.id_for(decision.employee))
    proposal_seq = ctx.app.sealed.nonce_seq(decision.proposal_nonce)
    if docket is not None and proposal_seq is not None:
        appeal = docket.contesting(proposal_seq)
        if appeal is not None and appeal.pending:
            ctx.refuse(
                ALREADY_CONTESTED,
                f"appeal {appeal.id!r} against the proposal is pending: it cannot be issued",
            )
    _check_grounds(ctx, decision.employee, decision.grounds)
    return ctx.append(decision, HrDecision.Issued)


def withdraw(ctx: Context, data: WithdrawnData) -> Recording:
    decision = _decision(ctx, data.decision)
    if ctx.actor == decision.employee:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot withdraw an HR decision about themselves")
    return ctx.append(decision, HrDecision.Withdrawn)


def apply_ruling(ctx: Context, data: RulingData) -> Recording:
    ctx.require_ledger()
    decision = ctx.require(HrDecision, HrDecision.id_for(data.target.decision), "HR decision")
    return ctx.append(decision, HrDecision.RulingApplied)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    DECISION_PROPOSED: (ProposedData, propose),
    DECISION_ISSUED: (IssuedData, issue),
    DECISION_WITHDRAWN: (WithdrawnData, withdraw),
    RULING_APPLIED: (RulingData, apply_ruling),
}
