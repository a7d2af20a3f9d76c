"""Conduct: discipline (kỷ luật) and its annulment, and conclusions of degradation.

One stream per employee. All by an HR officer covering the employee's unit, never about
themselves.

``discipline.imposed`` ``{discipline, employee, level, decided_on, legal_basis, reason}``
    level (Decree 112/2020/NĐ-CP's forms for civil servants, the codes of the shipped packs):
    reprimand (khiển trách), warning (cảnh cáo), salary_grade_reduction (hạ bậc lương),
    demotion (giáng chức), removal_from_office (cách chức), dismissal (buộc thôi việc). The
    policy says which levels force the year's grade to "fails".
``discipline.annulled`` ``{discipline, employee, reason, legal_basis}``
    The discipline no longer counts; both facts stay in the log, so replay shows both states.
``conduct.concluded`` ``{conclusion, employee, kind, decided_on, legal_basis}``
    A conclusion of political or moral degradation, or, for a leader, corruption handled in
    their unit; may also be recorded by an inspector.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar, Literal
from uuid import UUID

from domain.context import Context, Handler, Recording
from domain.errors import ALREADY_EXISTS, SELF_APPROVAL, UNKNOWN_REFERENCE, WRONG_STATE
from domain.schemas import Code, Day, FactData, Text
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

IMPOSED = "discipline.imposed"
ANNULLED = "discipline.annulled"
CONCLUDED = "conduct.concluded"

Level = Literal[
    "reprimand", "warning", "salary_grade_reduction", "demotion", "removal_from_office", "dismissal"
]


class ImposedData(FactData):
    discipline: Code
    employee: Code
    level: Level
    decided_on: Day
    legal_basis: Text
    reason: Text


class AnnulledData(FactData):
    discipline: Code
    employee: Code
    reason: Text
    legal_basis: Text


class ConcludedData(FactData):
    conclusion: Code
    employee: Code
    kind: Literal["political_degradation", "moral_degradation", "corruption_in_unit"]
    decided_on: Day
    legal_basis: Text


@dataclass
class Discipline:
    id: str
    level: str
    decided_on: dt.date
    annulled: bool = False


class Conduct(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({IMPOSED, ANNULLED, CONCLUDED})

    class Opened(SignedCreated):
        def apply(self, aggregate: Conduct) -> None:
            aggregate.employee = self.data["employee"]
            aggregate.record(self)

    class Imposed(SignedEvent):
        def apply(self, aggregate: Conduct) -> None:
            aggregate.record(self)

    class Annulled(SignedEvent):
        def apply(self, aggregate: Conduct) -> None:
            aggregate.disciplines[self.data["discipline"]].annulled = True

    class Concluded(SignedEvent):
        def apply(self, aggregate: Conduct) -> None:
            aggregate.record(self)

    def __init__(self) -> None:
        self.employee = ""
        self.disciplines: dict[str, Discipline] = {}
        self.conclusions: dict[str, str] = {}

    def record(self, event: SignedEvent) -> None:
        d = event.data
        if event.fact.type == IMPOSED:
            self.disciplines[d["discipline"]] = Discipline(
                d["discipline"], d["level"], dt.date.fromisoformat(d["decided_on"])
            )
        else:
            self.conclusions[d["conclusion"]] = d["kind"]

    @staticmethod
    def id_for(employee: str) -> UUID:
        return stream_id("conduct", employee)


def _start_or_append(ctx: Context, employee: str, event: type[SignedEvent]) -> Recording:
    conduct = ctx.get(Conduct, Conduct.id_for(employee))
    if conduct is None:
        return ctx.start(Conduct, Conduct.id_for(employee), Conduct.Opened)
    return ctx.append(conduct, event)


def _authorised(ctx: Context, employee_code: str, *also: str) -> Conduct | None:
    employee = ctx.employee(employee_code)
    if ctx.actor == employee_code:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot record conduct facts about themselves")
    ctx.require_role("hr", employee.unit, also=also)
    return ctx.get(Conduct, Conduct.id_for(employee_code))


def impose(ctx: Context, data: ImposedData) -> Recording:
    conduct = _authorised(ctx, data.employee)
    if conduct is not None and data.discipline in conduct.disciplines:
        ctx.refuse(ALREADY_EXISTS, f"discipline {data.discipline!r} is already recorded")
    if data.decided_on > ctx.time.date():
        ctx.refuse(WRONG_STATE, f"decided_on {data.decided_on} is in the future")
    return _start_or_append(ctx, data.employee, Conduct.Imposed)


def annul(ctx: Context, data: AnnulledData) -> Recording:
    conduct = _authorised(ctx, data.employee)
    found = conduct.disciplines.get(data.discipline) if conduct is not None else None
    if conduct is None or found is None:
        ctx.refuse(UNKNOWN_REFERENCE, f"no discipline {data.discipline!r} of {data.employee!r}")
    if found.annulled:
        ctx.refuse(WRONG_STATE, f"discipline {data.discipline!r} is already annulled")
    return ctx.append(conduct, Conduct.Annulled)


def conclude(ctx: Context, data: ConcludedData) -> Recording:
    conduct = _authorised(ctx, data.employee, "inspector")
    if conduct is not None and data.conclusion in conduct.conclusions:
        ctx.refuse(ALREADY_EXISTS, f"conclusion {data.conclusion!r} is already recorded")
    if data.decided_on > ctx.time.date():
        ctx.refuse(WRONG_STATE, f"decided_on {data.decided_on} is in the future")
    return _start_or_append(ctx, data.employee, Conduct.Concluded)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    IMPOSED: (ImposedData, impose),
    ANNULLED: (AnnulledData, annul),
    CONCLUDED: (ConcludedData, conclude),
}
