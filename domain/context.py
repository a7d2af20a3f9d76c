"""What a fact's handler sees: the fact, the state it may read, and how it answers.

A handler (one per fact type, in the module of the aggregate it changes) checks the rules and
returns a ``Recording``: which aggregate the fact's event goes to, and which facts the ledger
must derive from it (the compensating events of an appeal decision). Handlers never change an
aggregate themselves; the service applies the recording only once every check has passed, so
a refusal leaves no trace, not even in memory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar
from uuid import UUID

from domain.errors import (
    LEDGER_ONLY,
    NO_POLICY,
    OUTSIDE_SCOPE,
    ROLE_MISSING,
    UNKNOWN_REFERENCE,
    RuleBroken,
)
from domain.signed import SignedAggregate, SignedEvent
from signing.facts import Fact

if TYPE_CHECKING:
    from domain.employees import Employee
    from domain.organisation import Access, OrgUnit
    from domain.periods import Periods
    from domain.policy import Policy
    from signing.keyring import KeyRing

A = TypeVar("A", bound=SignedAggregate)


@dataclass(frozen=True)
class Derived:
    """A fact the ledger signs itself, right after the fact that caused it."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Recording:
    """Where a fact's event goes: a new stream (``create``) or an existing aggregate."""

    event: type[SignedEvent]
    aggregate: SignedAggregate | None = None
    create: tuple[type[SignedAggregate], UUID] | None = None
    derived: tuple[Derived, ...] = ()


@dataclass(frozen=True)
class LoggedAct:
    """An entry of the log read back by position (the act an appeal contests)."""

    seq: int
    stream: UUID
    type: str
    fact: Fact


class NonceIndex(Protocol):
    def nonce_seq(self, nonce: str) -> int | None:
        """The position of the entry that used ``nonce`` before, or None."""
        ...


class LedgerState(Protocol):
    """What a handler reads of the ledger through its ``Context``, and nothing more.

    ``LedgerService`` offers it with the state as it stands (the intake); the rule replay
    (``domain/admission.py``) with the state as of a past position, folded from the entries
    before it. ``unit_chains`` is a cache the context fills (units never move).
    """

    unit_chains: dict[str, list[str]]

    @property
    def working_keyring(self) -> KeyRing: ...

    @property
    def ledger_principal(self) -> str | None: ...

    @property
    def sealed(self) -> NonceIndex: ...

    def get_or_none(self, aggregate_id: UUID, pending: dict[UUID, SignedAggregate]) -> Any: ...

    def logged_act(self, seq: int) -> LoggedAct | None: ...


@dataclass
class Context:
    """One fact under examination, with read access to the ledger's state at its position."""

    app: LedgerState
    fact: Fact
    position: int
    admin: bool  # signed with an administrator key of the key ring
    pending: dict[UUID, SignedAggregate]
    lookups: dict[str, Any] = field(default_factory=dict)

    # -- the fact --------------------------------------------------------------------
    @property
    def actor(self) -> str:
        return self.fact.actor

    @property
    def fact_type(self) -> str:
        return self.fact.type

    @property
    def time(self) -> dt.datetime:
        return self.fact.claimed_at

    def refuse(self, rule: str, detail: str) -> NoReturn:
        raise RuleBroken(detail, rule=rule, fact_type=self.fact.type, actor=self.fact.actor)

    # -- answers ---------------------------------------------------------------------
    @staticmethod
    def start(
        cls: type[SignedAggregate], aggregate_id: UUID, event: type[SignedEvent]
    ) -> Recording:
        return Recording(event=event, create=(cls, aggregate_id))

    @staticmethod
    def append(aggregate: SignedAggregate, event: type[SignedEvent]) -> Recording:
        return Recording(event=event, aggregate=aggregate)

    # -- reading state -----------------------------------------------------------------
    def get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        found = self.app.get_or_none(aggregate_id, self.pending)
        if found is not None and not isinstance(found, cls):
            raise TypeError(f"stream {aggregate_id} holds a {type(found).__name__}")
        return found

    def require(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        found = self.get(cls, aggregate_id)
        if found is None:
            self.refuse(UNKNOWN_REFERENCE, f"no {what} is known to this ledger")
        return found

    def unit(self, code: str) -> OrgUnit:
        from domain.organisation import OrgUnit

        return self.require(OrgUnit, OrgUnit.id_for(code), f"unit {code!r}")

    def employee(self, code: str) -> Employee:
        from domain.employees import Employee

        return self.require(Employee, Employee.id_for(code), f"employee {code!r}")

    def ancestors(self, code: str) -> list[str]:
        """``code`` and the units above it, nearest first.

        Units never move once created, so the chain of a unit already saved is remembered by
        the service; one created in this batch is not (the batch may still fail).
        """
        known = self.app.unit_chains.get(code)
        if known is not None:
            return known
        chain = [code]
        unit = self.unit(code)
        saved = unit.id not in self.pending
        while unit.parent is not None:
            chain.append(unit.parent)
            unit = self.unit(unit.parent)
            saved = saved and unit.id not in self.pending
        if saved:
            self.app.unit_chains[code] = chain
        return chain

    def agency_of(self, code: str) -> str:
        """The agency a unit belongs to: itself or its nearest ancestor of kind agency."""
        for ancestor in self.ancestors(code):
            if self.unit(ancestor).kind == "agency":
                return ancestor
        self.refuse(UNKNOWN_REFERENCE, f"unit {code!r} belongs to no agency")

    def access(self, principal: str) -> Access | None:
        from domain.organisation import Access

        return self.get(Access, Access.id_for(principal))

    def has_role(self, principal: str, role: str, unit: str) -> bool:
        access = self.access(principal)
        if access is None:
            return False
        scopes = access.scopes(role)
        return bool(scopes) and any(u in scopes for u in self.ancestors(unit))

    def require_role(self, role: str, unit: str, *, also: tuple[str, ...] = ()) -> str:
        """Refuse unless the actor holds ``role`` (or one of ``also``) over ``unit``.

        Returns the role that matched. Names ``role.missing`` when the actor holds the role
        nowhere, ``scope.outside`` when it holds it for other units only.
        """
        access = self.access(self.actor)
        roles = (role, *also)
        held = [r for r in roles if access is not None and access.scopes(r)]
        chain = self.ancestors(unit)
        for r in held:
            assert access is not None
            if any(u in access.scopes(r) for u in chain):
                return r
        wanted = " or ".join(roles)
        if not held:
            self.refuse(ROLE_MISSING, f"{self.actor!r} holds no {wanted} role")
        self.refuse(OUTSIDE_SCOPE, f"{self.actor!r} is no {wanted} of unit {unit!r}")

    def policy(self, unit: str, day: dt.date) -> Policy:
        """The policy in force for ``unit`` on ``day`` (nearest scoped ancestor, newest version)."""
        from domain.publications import PolicyBook

        key = f"policy/{unit}/{day.isoformat()}"
        if key in self.lookups:
            cached: Policy = self.lookups[key]
            return cached
        for ancestor in self.ancestors(unit):
            book = self.get(PolicyBook, PolicyBook.id_for(ancestor))
            if book is not None:
                found = book.in_force(day)
                if found is not None:
                    self.lookups[key] = found
                    return found
        self.refuse(NO_POLICY, f"no published policy applies to unit {unit!r} on {day}")

    def periods(self, agency: str) -> Periods | None:
        from domain.periods import Periods

        return self.get(Periods, Periods.id_for(agency))

    def logged(self, seq: int) -> LoggedAct | None:
        """The entry at ``seq`` (accepted in an earlier transaction), or None."""
        return self.app.logged_act(seq)

    def require_ledger(self) -> None:
        """Refuse a derived fact type (``*.ruling_applied``) signed by anyone but the ledger."""
        if self.actor != self.app.ledger_principal:
            self.refuse(LEDGER_ONLY, f"{self.fact_type} is derived and signed by the ledger itself")


Handler = Callable[[Context, Any], Recording]
