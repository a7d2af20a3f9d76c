"""Employees (công chức / viên chức): who works where, in which position, and when on leave.

An employee's code is also the name of the principal whose keys sign their facts: Lan signs
as ``lan.nguyen`` and is the employee ``lan.nguyen``. Every fact here is recorded by an HR
officer whose scope covers the unit concerned.

``employee.registered`` ``{employee, name, unit, position, since}``
``employee.assigned`` ``{employee, unit, position, since}``
    A new unit or position within the same agency.
``employee.transferred`` ``{employee, unit, position, since, reason}``
    To a unit of another agency; recorded by HR covering the receiving unit. The new agency
    ranks with the old agency's signed monthly results (the projections import them).
``employee.leave_recorded`` ``{employee, leave, kind, start, end}``
    Sick, maternity or other leave; months on leave are excluded from the year, not zero.

``since`` never goes back before the latest assignment: history is appended, not rewritten.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar, Literal
from uuid import UUID

from domain.context import Context, Handler, Recording
from domain.errors import ALREADY_EXISTS, WRONG_STATE
from domain.organisation import Position
from domain.schemas import Code, Day, FactData, Text
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

REGISTERED = "employee.registered"
ASSIGNED = "employee.assigned"
TRANSFERRED = "employee.transferred"
LEAVE_RECORDED = "employee.leave_recorded"


class RegisteredData(FactData):
    employee: Code
    name: Text
    unit: Code
    position: Code
    since: Day


class AssignedData(FactData):
    employee: Code
    unit: Code
    position: Code
    since: Day


class TransferredData(AssignedData):
    reason: Text


class LeaveData(FactData):
    employee: Code
    leave: Code
    kind: Literal["sick", "maternity", "other"]
    start: Day
    end: Day


@dataclass(frozen=True)
class Posting:
    since: dt.date
    unit: str
    position: str


@dataclass(frozen=True)
class Leave:
    id: str
    kind: str
    start: dt.date
    end: dt.date


class Employee(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset(
        {REGISTERED, ASSIGNED, TRANSFERRED, LEAVE_RECORDED}
    )

    class Registered(SignedCreated):
        def apply(self, aggregate: Employee) -> None:
            aggregate.code = self.data["employee"]
            aggregate.name = self.data["name"]
            aggregate.post(self.data)

    class Assigned(SignedEvent):
        def apply(self, aggregate: Employee) -> None:
            aggregate.post(self.data)

    class Transferred(SignedEvent):
        def apply(self, aggregate: Employee) -> None:
            aggregate.post(self.data)

    class LeaveRecorded(SignedEvent):
        def apply(self, aggregate: Employee) -> None:
            d = self.data
            aggregate.leaves.append(
                Leave(
                    d["leave"],
                    d["kind"],
                    dt.date.fromisoformat(d["start"]),
                    dt.date.fromisoformat(d["end"]),
                )
            )

    def __init__(self) -> None:
        self.code = ""
        self.name = ""
        self.postings: list[Posting] = []
        self.leaves: list[Leave] = []

    def post(self, data: dict[str, str]) -> None:
        self.postings.append(
            Posting(dt.date.fromisoformat(data["since"]), data["unit"], data["position"])
        )

    @property
    def unit(self) -> str:
        return self.postings[-1].unit

    @property
    def position(self) -> str:
        return self.postings[-1].position

    def posting_on(self, day: dt.date) -> Posting:
        """Where the employee worked on ``day`` (their first posting before they started)."""
        current = self.postings[0]
        for posting in self.postings:
            if posting.since <= day:
                current = posting
        return current

    @staticmethod
    def id_for(code: str) -> UUID:
        return stream_id("employee", code)


def register(ctx: Context, data: RegisteredData) -> Recording:
    if ctx.get(Employee, Employee.id_for(data.employee)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"employee {data.employee!r} is already registered")
    ctx.unit(data.unit)
    ctx.require(Position, Position.id_for(data.position), f"position {data.position!r}")
    ctx.require_role("hr", data.unit)
    return ctx.start(Employee, Employee.id_for(data.employee), Employee.Registered)


def _move(ctx: Context, data: AssignedData, *, transfer: bool) -> Employee:
    employee = ctx.employee(data.employee)
    ctx.unit(data.unit)
    ctx.require(Position, Position.id_for(data.position), f"position {data.position!r}")
    if data.since < employee.postings[-1].since:
        ctx.refuse(
            WRONG_STATE,
            f"since {data.since} is before the current posting ({employee.postings[-1].since})",
        )
    same_agency = ctx.agency_of(data.unit) == ctx.agency_of(employee.unit)
    if transfer and same_agency:
        ctx.refuse(WRONG_STATE, "a transfer goes to another agency: use employee.assigned")
    if not transfer and not same_agency:
        ctx.refuse(WRONG_STATE, "another agency: record an employee.transferred")
    ctx.require_role("hr", data.unit)
    if not transfer:
        ctx.require_role("hr", employee.unit)
    return employee


def assign(ctx: Context, data: AssignedData) -> Recording:
    return ctx.append(_move(ctx, data, transfer=False), Employee.Assigned)


def transfer(ctx: Context, data: TransferredData) -> Recording:
    return ctx.append(_move(ctx, data, transfer=True), Employee.Transferred)


def record_leave(ctx: Context, data: LeaveData) -> Recording:
    employee = ctx.employee(data.employee)
    ctx.require_role("hr", employee.unit)
    if data.end < data.start:
        ctx.refuse(WRONG_STATE, f"leave ends ({data.end}) before it starts ({data.start})")
    for leave in employee.leaves:
        if leave.id == data.leave:
            ctx.refuse(ALREADY_EXISTS, f"leave {data.leave!r} is already recorded")
        if leave.start <= data.end and data.start <= leave.end:
            ctx.refuse(WRONG_STATE, f"overlaps leave {leave.id!r} ({leave.start}–{leave.end})")
    return ctx.append(employee, Employee.LeaveRecorded)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    REGISTERED: (RegisteredData, register),
    ASSIGNED: (AssignedData, assign),
    TRANSFERRED: (TransferredData, transfer),
    LEAVE_RECORDED: (LeaveData, record_leave),
}
