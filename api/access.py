"""What an authenticated caller may read, from the organisation facts in the log.

A caller is a principal (``api/principals.py``) seen through the log as it stands: the roles
granted to it (``role.granted`` / ``role.revoked``, each with the units it covers), whether its
key is an administrator's, and whether it is itself an employee. Reading rules:

* an **administrator** or an **inspector** reads everything;
* an **HR officer**, a **supervisor** or an **appeal reviewer** reads the employees posted under
  a unit their role covers (the unit or any unit below it), in the period read;
* an **employee** reads their own records. For a leader these include, in her own score's
  trace, the result (person, grade, total, the positions of the appeal rulings applied) of
  each staff member her leader factor read for that period: a leader position grants reading
  those results, the basis of her own grade, and nothing else of her staff's
  (``docs/scoring.md`` §5);
* an **integrating system** reads no one's scores (it writes facts and reads receipts).

Anyone authenticated may read what proves integrity and names no one: checkpoints, proofs,
receipts. The refusal journal (``GET /v1/refusals``: refused submissions, outside the log) is
read whole by administrators and inspectors; anyone else reads only the refusals of facts they
signed themselves (a civil servant sees her own refused attempts; her supervisor and HR do not
see them there, only the self-approval-attempt flag, which ``/v1/flags`` shows to whoever may
read her in the flag's month). The log's entries themselves (the exact bytes) and the export
bundle are for administrators and inspectors. What a caller may *write* is decided by the
domain rules on the signed fact itself (``domain/``), once the API has checked that the fact
is signed by the caller (``api/routes/facts.py``).

The organisation is read through the ledger's repository each time it is asked (a handful
of small streams), never from a cache that could lag behind a revocation. Only a stream that
does not exist reads as "none"; any other failure to read one (the database is away) is
raised, and the request fails with a server error rather than a refusal that would not be
true.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from domain.employees import Employee
from domain.keys import Principal
from domain.organisation import Access, OrgUnit
from domain.service import LedgerService

READ_ALL = ("inspector",)
READ_UNIT = ("hr", "supervisor", "reviewer")


@dataclass(frozen=True)
class Caller:
    principal: str
    admin: bool = False
    roles: dict[str, frozenset[str]] = field(default_factory=dict)  # role -> units
    employee: bool = False

    @property
    def reads_everything(self) -> bool:
        return self.admin or any(self.roles.get(r) for r in READ_ALL)

    def holds(self, role: str) -> bool:
        return bool(self.roles.get(role))

    def units(self, *roles: str) -> frozenset[str]:
        out: set[str] = set()
        for role in roles:
            out.update(self.roles.get(role, ()))
        return frozenset(out)

    def describe(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "admin": self.admin,
            "employee": self.employee,
            "roles": {r: sorted(u) for r, u in sorted(self.roles.items()) if u},
        }


class Organisation:
    """Reads the organisation aggregates straight from the ledger's event store."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service

    def _get(self, cls: type[Any], aggregate_id: Any) -> Any:
        """The aggregate, or None if its stream does not exist (anything else is raised)."""
        try:
            return self.service.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def caller(self, principal: str) -> Caller:
        """The principal's roles, administrator status and employee record, read from its
        streams (no writer lock: reads never wait for a write)."""
        keys = self._get(Principal, Principal.id_for(principal))
        admin = isinstance(keys, Principal) and keys.admin and bool(keys.active_keys)
        access = self._get(Access, Access.id_for(principal))
        roles = (
            {r: frozenset(u) for r, u in access.roles.items()} if isinstance(access, Access) else {}
        )
        employee = isinstance(self._get(Employee, Employee.id_for(principal)), Employee)
        return Caller(principal, admin, roles, employee)

    def chain(self, unit: str) -> list[str]:
        """``unit`` and the units above it."""
        known = self.service.unit_chains.get(unit)
        if known is not None:
            return known
        chain = [unit]
        found = self._get(OrgUnit, OrgUnit.id_for(unit))
        while isinstance(found, OrgUnit) and found.parent is not None:
            chain.append(found.parent)
            found = self._get(OrgUnit, OrgUnit.id_for(found.parent))
        return chain

    def posting_unit(self, employee: str, day: dt.date | None) -> list[str]:
        """The units ``employee`` was posted to: on ``day``, or ever (None); [] if unknown."""
        found = self._get(Employee, Employee.id_for(employee))
        if not isinstance(found, Employee):
            return []
        if day is not None:
            return [found.posting_on(day).unit]
        return sorted({p.unit for p in found.postings})

    def may_read_employee(self, caller: Caller, employee: str, day: dt.date | None) -> bool:
        """Whether ``caller`` may read ``employee``'s records (on ``day``, or at any time)."""
        if caller.reads_everything or caller.principal == employee:
            return True
        scope = caller.units(*READ_UNIT)
        if not scope:
            return False
        return any(scope.intersection(self.chain(u)) for u in self.posting_unit(employee, day))

    def may_read_unit(self, caller: Caller, unit: str) -> bool:
        """Whether ``caller`` may read a unit's (or agency's) views."""
        if caller.reads_everything:
            return True
        return bool(caller.units(*READ_UNIT).intersection(self.chain(unit)))
