"""Organisation: units (their hierarchy), positions, and who holds which role where.

Fact types and their rules:

``org.unit_created`` ``{unit, name, kind, parent?}``
    kind is province, agency, department or section. A root unit (no parent) is created by an
    administrator of the key ring; a unit under a parent by an administrator or by an HR
    officer whose scope covers the parent. Unit codes are never reused.
``org.position_defined`` ``{position, name, leader, rank?}``
    A job position (vị trí việc làm); ``leader`` marks positions scored on their unit too.
    ``rank`` (optional, 1–9, leader positions only) orders the leaders of one unit: 1 is the
    head (trưởng), 2 a deputy (phó), and so on; a leader position without it has rank 1. A
    leader's staff leaves out the leaders of the same unit with a rank equal to or higher
    (a number equal or lower) than theirs. By an administrator or any HR officer.
``role.granted`` / ``role.revoked`` ``{principal, role, unit}``
    Roles: supervisor, hr, reviewer, inspector, integrator; a role held at a unit covers the
    unit and every unit below it. Granted by an administrator, or by an HR officer within
    their own scope; nobody grants or revokes their own roles.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from domain.context import Context, Handler, Recording
from domain.errors import ALREADY_EXISTS, ROLE_MISSING, SELF_APPROVAL, WRONG_STATE
from domain.schemas import Code, FactData, Name, Text
from domain.signed import SignedAggregate, SignedCreated, SignedEvent, stream_id

UNIT_CREATED = "org.unit_created"
POSITION_DEFINED = "org.position_defined"
ROLE_GRANTED = "role.granted"
ROLE_REVOKED = "role.revoked"

ROLES = ("supervisor", "hr", "reviewer", "inspector", "integrator")
RoleName = Literal["supervisor", "hr", "reviewer", "inspector", "integrator"]


class UnitCreatedData(FactData):
    unit: Code
    name: Text
    kind: Literal["province", "agency", "department", "section"]
    parent: Code | None = None


class PositionDefinedData(FactData):
    position: Code
    name: Text
    leader: bool = False
    rank: Annotated[int, Field(ge=1, le=9)] | None = None  # leaders only; absent: 1 (head)


class RoleData(FactData):
    principal: Name
    role: RoleName
    unit: Code


class OrgUnit(SignedAggregate):
    """A unit of the organisation (tỉnh, sở/cơ quan, phòng, bộ phận)."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({UNIT_CREATED})

    class Created(SignedCreated):
        def apply(self, aggregate: OrgUnit) -> None:
            aggregate.code = self.data["unit"]
            aggregate.name = self.data["name"]
            aggregate.kind = self.data["kind"]
            aggregate.parent = self.data.get("parent")

    def __init__(self) -> None:
        self.code = ""
        self.name = ""
        self.kind = ""
        self.parent: str | None = None

    @staticmethod
    def id_for(code: str) -> UUID:
        return stream_id("unit", code)


class Position(SignedAggregate):
    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({POSITION_DEFINED})

    class Defined(SignedCreated):
        def apply(self, aggregate: Position) -> None:
            aggregate.code = self.data["position"]
            aggregate.name = self.data["name"]
            aggregate.leader = bool(self.data.get("leader", False))

    def __init__(self) -> None:
        self.code = ""
        self.name = ""
        self.leader = False

    @staticmethod
    def id_for(code: str) -> UUID:
        return stream_id("position", code)


class Access(SignedAggregate):
    """The roles one principal holds, each with the units it covers."""

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset({ROLE_GRANTED, ROLE_REVOKED})

    class FirstGranted(SignedCreated):
        def apply(self, aggregate: Access) -> None:
            aggregate.principal = self.data["principal"]
            aggregate.grant(self.data)

    class Granted(SignedEvent):
        def apply(self, aggregate: Access) -> None:
            aggregate.grant(self.data)

    class Revoked(SignedEvent):
        def apply(self, aggregate: Access) -> None:
            aggregate.roles.get(self.data["role"], set()).discard(self.data["unit"])

    def __init__(self) -> None:
        self.principal = ""
        self.roles: dict[str, set[str]] = {}

    def grant(self, data: dict[str, Any]) -> None:
        self.roles.setdefault(data["role"], set()).add(data["unit"])

    def scopes(self, role: str) -> set[str]:
        return self.roles.get(role, set())

    @staticmethod
    def id_for(principal: str) -> UUID:
        return stream_id("access", principal)


def _may_organise(ctx: Context, unit: str | None) -> None:
    """Administrators organise anywhere; HR officers under a unit their scope covers."""
    if ctx.admin:
        return
    if unit is None:
        ctx.refuse(ROLE_MISSING, "only an administrator creates a root unit")
    ctx.require_role("hr", unit)


def create_unit(ctx: Context, data: UnitCreatedData) -> Recording:
    if ctx.get(OrgUnit, OrgUnit.id_for(data.unit)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"unit {data.unit!r} already exists")
    if data.parent is not None:
        ctx.unit(data.parent)
    _may_organise(ctx, data.parent)
    return ctx.start(OrgUnit, OrgUnit.id_for(data.unit), OrgUnit.Created)


def define_position(ctx: Context, data: PositionDefinedData) -> Recording:
    if ctx.get(Position, Position.id_for(data.position)) is not None:
        ctx.refuse(ALREADY_EXISTS, f"position {data.position!r} already exists")
    access = ctx.access(ctx.actor)
    if not ctx.admin and (access is None or not access.scopes("hr")):
        ctx.refuse(ROLE_MISSING, f"{ctx.actor!r} is neither an administrator nor an HR officer")
    if data.rank is not None and not data.leader:
        ctx.refuse(WRONG_STATE, "a rank orders leaders: only a leader position has one")
    return ctx.start(Position, Position.id_for(data.position), Position.Defined)


def _check_grantor(ctx: Context, data: RoleData) -> None:
    if data.principal == ctx.actor:
        ctx.refuse(SELF_APPROVAL, f"{ctx.actor!r} cannot grant or revoke their own roles")
    ctx.unit(data.unit)
    if not ctx.admin:
        ctx.require_role("hr", data.unit)


def grant_role(ctx: Context, data: RoleData) -> Recording:
    _check_grantor(ctx, data)
    access = ctx.get(Access, Access.id_for(data.principal))
    if access is None:
        return ctx.start(Access, Access.id_for(data.principal), Access.FirstGranted)
    if data.unit in access.scopes(data.role):
        ctx.refuse(WRONG_STATE, f"{data.principal!r} already holds {data.role} at {data.unit!r}")
    return ctx.append(access, Access.Granted)


def revoke_role(ctx: Context, data: RoleData) -> Recording:
    _check_grantor(ctx, data)
    access = ctx.get(Access, Access.id_for(data.principal))
    if access is None or data.unit not in access.scopes(data.role):
        ctx.refuse(WRONG_STATE, f"{data.principal!r} holds no {data.role} role at {data.unit!r}")
    return ctx.append(access, Access.Revoked)


HANDLERS: dict[str, tuple[type[FactData], Handler]] = {
    UNIT_CREATED: (UnitCreatedData, create_unit),
    POSITION_DEFINED: (PositionDefinedData, define_position),
    ROLE_GRANTED: (RoleData, grant_role),
    ROLE_REVOKED: (RoleData, revoke_role),
}
