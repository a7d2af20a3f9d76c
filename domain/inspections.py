"""Inspections: an inspector's findings (phát hiện, kết luận thanh tra).

One stream per finding. An inspector records what an inspection found about an employee
(their period, if it is about one) or about a unit, citing the log positions it rests on; the
finding changes no score (a spot check does that for one item: ``domain/work.py``). A finding
is never edited: a later finding may cite an earlier one.

``inspection.finding_recorded``
``{finding, employee?, unit?, period?, facts, severity, summary}``
    Exactly one of ``employee`` and ``unit``. ``facts``: log positions before this fact (at
    most 100). ``severity``: observation, minor or major. By an inspector whose role covers
    the employee's unit, or the unit.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import ALREADY_EXISTS, UNKNOWN_REFERENCE, WRONG_STATE
from domain.schemas import Code, FactData, Period, Text
from domain.signed import SignedAggregate, SignedCreated, stream_id

RECORDED = "inspection.finding_recorded"


class FindingData(FactData):
    finding: Code
    employee: Code | None = None
    unit: Code | None = None
    period: Period | None = None
    facts: list[int] = Field(default_factory=list, max_length=100)
    severity: Literal["observation", "minor", "major"]
    summary: Text


class Finding(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({RECORDED})

    class Recorded(SignedCreated):
        def apply(self, aggregate: Finding) -> None:
            aggregate.finding = self.data["finding"]
            aggregate.subject = self.data.get("employee") or self.data.get("unit") or ""

    def __init__(self) -> None:
        self.finding = ""
        self.subject = ""

    @staticmethod
    def id_for(finding: str) -> UUID:
        return stream_id("finding", finding)


def record(ctx: Context, data: FindingData) -> Recording:
    if (data.employee is None) == (data.unit is None):
        ctx.refuse(WRONG_STATE, "a finding is about an employee or a unit: name exactly one")
    if data.period is not None and data.employee is None:
        ctx.refuse(WRONG_STATE, "a period is named only with the employee it concerns")
    if ctx.get(Finding, Finding.id_for(data.finding)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"finding {data.finding!r} is already recorded")
    unit = ctx.employee(data.employee).unit if data.employee is not None else None
    if data.unit is not None:
        unit = ctx.unit(data.unit).code
    assert unit is not None
    ctx.require_role("inspector", unit)
    later = [seq for seq in data.facts if not 0 <= seq < ctx.position]
    if later:
        ctx.refuse(
            UNKNOWN_REFERENCE,
            f"a finding cites positions before its own ({ctx.position}), not {later[0]}",
        )
    return ctx.start(Finding, Finding.id_for(data.finding), Finding.Recorded)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {RECORDED: (FindingData, record)}
