"""The reference facts a score rests on, folded from the log: who works where, which policy
and catalogue are in force, conduct, period closes, appeals and HR decisions.

``Registry.apply(fact)`` folds one fact (others are ignored). The same fold serves the
projection runner (over the whole log) and as-of replay (over the few streams one score
needs), so both read the same facts the same way. The registry grows with the organisation
(units, people, published rules), never with the amount of work recorded.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from domain.policy import Policy, effective_policy, parse_policy
from domain.schemas import period_start
from projections.facts import Fact, parse_day

#: the fact types the registry folds (everything else is work, assessment or a rating)
REFERENCE_TYPES = frozenset(
    {
        "org.unit_created",
        "org.position_defined",
        "employee.registered",
        "employee.assigned",
        "employee.transferred",
        "employee.leave_recorded",
        "policy.published",
        "catalogue.published",
        "discipline.imposed",
        "discipline.annulled",
        "conduct.concluded",
        "period.closed",
        "period.ruling_applied",
        "appeal.filed",
        "appeal.assigned",
        "appeal.decided",
        "appeal.withdrawn",
        "hr.decision_proposed",
        "hr.decision_issued",
        "hr.decision_withdrawn",
        "hr.ruling_applied",
    }
)

POSTING_TYPES = frozenset({"employee.registered", "employee.assigned", "employee.transferred"})


@dataclass(frozen=True)
class Posting:
    since: dt.date
    unit: str
    position: str
    seq: int
    transfer: bool


@dataclass(frozen=True)
class Leave:
    kind: str
    start: dt.date
    end: dt.date
    seq: int


@dataclass(frozen=True)
class PolicyVersion:
    policy: Policy
    scope: str
    seq: int


@dataclass(frozen=True)
class CatalogueEntry:
    code: str
    group: str
    products: Decimal | None
    hours: Decimal | None
    positions: frozenset[str]


@dataclass(frozen=True)
class CatalogueVersion:
    agency: str
    version: int
    effective_from: dt.date
    items: dict[str, CatalogueEntry]
    seq: int


@dataclass
class Discipline:
    id: str
    level: str
    decided_on: dt.date
    seq: int
    annulled_seq: int | None = None


@dataclass(frozen=True)
class Conclusion:
    kind: str
    decided_on: dt.date
    seq: int


@dataclass(frozen=True)
class Close:
    agency: str
    period: str
    seq: int
    at: dt.datetime
    snapshot: str
    by: str


@dataclass
class Appeal:
    id: str
    appellant: str
    contested: tuple[int, ...]
    filed_seq: int
    filed_at: dt.datetime
    reviewer: str = ""
    status: str = "filed"  # assigned, decided, withdrawn
    outcome: str = ""
    closed_seq: int | None = None
    closed_at: dt.datetime | None = None


@dataclass
class HrDecision:
    id: str
    employee: str
    kind: str
    grounds: tuple[str, ...]
    proposed_seq: int
    proposed_at: dt.datetime
    status: str = "proposed"  # issued, withdrawn, overturned


@dataclass
class Person:
    code: str
    postings: list[Posting] = field(default_factory=list)
    leaves: list[Leave] = field(default_factory=list)
    disciplines: dict[str, Discipline] = field(default_factory=dict)
    conclusions: list[Conclusion] = field(default_factory=list)

    def posting_on(self, day: dt.date) -> Posting | None:
        """The posting in force on ``day`` (the latest one starting on or before it)."""
        found = None
        for posting in self.postings:
            if posting.since <= day:
                found = posting
        return found


class Registry:
    """Reference state as of the facts folded so far."""

    def __init__(self) -> None:
        self.parents: dict[str, str | None] = {}
        self.kinds: dict[str, str] = {}
        self.leaders: dict[str, bool] = {}
        # ranked leader positions -> rank (1 = head); an unranked leader position has none
        self.ranks: dict[str, int] = {}
        self.people: dict[str, Person] = {}
        self.policies: dict[str, list[PolicyVersion]] = {}
        self.catalogues: dict[str, list[CatalogueVersion]] = {}
        self.closes: dict[tuple[str, str], Close] = {}
        self.set_aside: dict[tuple[str, str, str], int] = {}  # (agency, period, employee)
        self.appeals: dict[tuple[str, str], Appeal] = {}  # (appellant, appeal)
        self.hr_decisions: dict[str, HrDecision] = {}
        self._chains: dict[str, tuple[str, ...]] = {}

    # -- folding -----------------------------------------------------------------------------

    def apply(self, fact: Fact) -> None:
        handler = _FOLD.get(fact.type)
        if handler is not None:
            handler(self, fact)

    def person(self, code: str) -> Person:
        found = self.people.get(code)
        if found is None:
            found = self.people[code] = Person(code)
        return found

    def _unit(self, fact: Fact) -> None:
        d = fact.data
        self.parents[d["unit"]] = d.get("parent")
        self.kinds[d["unit"]] = d["kind"]
        self._chains.clear()

    def _position(self, fact: Fact) -> None:
        leader = bool(fact.data.get("leader", False))
        self.leaders[fact.data["position"]] = leader
        if leader and fact.data.get("rank") is not None:
            self.ranks[fact.data["position"]] = int(fact.data["rank"])

    def _posting(self, fact: Fact) -> None:
        d = fact.data
        self.person(d["employee"]).postings.append(
            Posting(
                parse_day(d["since"]),
                d["unit"],
                d["position"],
                fact.seq,
                fact.type == "employee.transferred",
            )
        )

    def _leave(self, fact: Fact) -> None:
        d = fact.data
        self.person(d["employee"]).leaves.append(
            Leave(d["kind"], parse_day(d["start"]), parse_day(d["end"]), fact.seq)
        )

    def _policy(self, fact: Fact) -> None:
        scope = fact.data["scope"]
        self.policies.setdefault(scope, []).append(
            PolicyVersion(_parse(fact.data["document"]), scope, fact.seq)
        )

    def _catalogue(self, fact: Fact) -> None:
        d = fact.data
        items = {
            i["code"]: CatalogueEntry(
                i["code"],
                i["group"],
                Decimal(i["products"]) if i.get("products") is not None else None,
                Decimal(i["hours"]) if i.get("hours") is not None else None,
                frozenset(i.get("positions", ())),
            )
            for i in d["items"]
        }
        self.catalogues.setdefault(d["agency"], []).append(
            CatalogueVersion(
                d["agency"], int(d["version"]), parse_day(d["effective_from"]), items, fact.seq
            )
        )

    def _discipline(self, fact: Fact) -> None:
        d = fact.data
        self.person(d["employee"]).disciplines[d["discipline"]] = Discipline(
            d["discipline"], d["level"], parse_day(d["decided_on"]), fact.seq
        )

    def _annulment(self, fact: Fact) -> None:
        d = fact.data
        found = self.person(d["employee"]).disciplines.get(d["discipline"])
        if found is not None:
            found.annulled_seq = fact.seq

    def _conclusion(self, fact: Fact) -> None:
        d = fact.data
        self.person(d["employee"]).conclusions.append(
            Conclusion(d["kind"], parse_day(d["decided_on"]), fact.seq)
        )

    def _close(self, fact: Fact) -> None:
        d = fact.data
        self.closes[(d["agency"], d["period"])] = Close(
            d["agency"], d["period"], fact.seq, fact.at, d["snapshot"], fact.actor
        )

    def _period_ruling(self, fact: Fact) -> None:
        t = fact.data["target"]
        self.set_aside[(t["agency"], t["period"], t["employee"])] = fact.seq

    def _appeal_filed(self, fact: Fact) -> None:
        d = fact.data
        self.appeals[(fact.actor, d["appeal"])] = Appeal(
            d["appeal"], fact.actor, tuple(d["contested"]), fact.seq, fact.at
        )

    def _appeal(self, fact: Fact) -> None:
        d = fact.data
        found = self.appeals.get((d["appellant"], d["appeal"]))
        if found is None:  # withdrawn by the appellant: the actor is the appellant
            found = self.appeals.get((fact.actor, d["appeal"]))
        if found is None:
            return
        if fact.type == "appeal.assigned":
            found.reviewer = d["reviewer"]
            found.status = "assigned"
            return
        found.status = "decided" if fact.type == "appeal.decided" else "withdrawn"
        found.closed_seq, found.closed_at = fact.seq, fact.at
        if fact.type == "appeal.decided":
            rulings = [r["ruling"] for r in d["rulings"]]
            upheld = sum(1 for r in rulings if r == "upheld")
            found.outcome = (
                "dismissed"
                if upheld == len(rulings)
                else "granted"
                if upheld == 0
                else "partly_granted"
            )

    def _hr(self, fact: Fact) -> None:
        d = fact.data
        if fact.type == "hr.decision_proposed":
            self.hr_decisions[d["decision"]] = HrDecision(
                d["decision"], d["employee"], d["kind"], tuple(d["grounds"]), fact.seq, fact.at
            )
            return
        key = d["decision"] if "decision" in d else d["target"]["decision"]
        found = self.hr_decisions.get(key)
        if found is not None:
            found.status = {
                "hr.decision_issued": "issued",
                "hr.decision_withdrawn": "withdrawn",
                "hr.ruling_applied": "overturned",
            }[fact.type]

    # -- questions ---------------------------------------------------------------------------

    def chain(self, unit: str) -> tuple[str, ...]:
        """The unit and its ancestors, nearest first."""
        found = self._chains.get(unit)
        if found is None:
            out: list[str] = []
            current: str | None = unit
            while current is not None and current not in out:
                out.append(current)
                current = self.parents.get(current)
            found = self._chains[unit] = tuple(out)
        return found

    def agency_of(self, unit: str) -> str:
        for code in self.chain(unit):
            if self.kinds.get(code) == "agency":
                return code
        return self.chain(unit)[-1]

    def posting(self, employee: str, day: dt.date) -> Posting | None:
        person = self.people.get(employee)
        return None if person is None else person.posting_on(day)

    def policy_for(self, unit: str, day: dt.date) -> PolicyVersion | None:
        """The policy in force for ``unit`` on ``day``: the nearest scope with one in force."""
        for scope in self.chain(unit):
            versions = self.policies.get(scope)
            if not versions:
                continue
            chosen = effective_policy([v.policy for v in versions], day)
            if chosen is not None:
                for v in reversed(versions):
                    if v.policy is chosen:
                        return v
        return None

    def policy_versions(self, policy_id: str) -> list[PolicyVersion]:
        """Every published version of one policy line, oldest first."""
        return [
            v for versions in self.policies.values() for v in versions if v.policy.id == policy_id
        ]

    def catalogue_for(self, agency: str, day: dt.date) -> CatalogueVersion | None:
        """The agency's catalogue version in force on ``day`` (the newest effective)."""
        found = None
        for version in self.catalogues.get(agency, ()):
            if version.effective_from <= day and (
                found is None or version.effective_from >= found.effective_from
            ):
                found = version
        return found

    def is_leader(self, position: str) -> bool:
        return self.leaders.get(position, False)

    def staff(self, leader: str, unit: str, members: list[str], day: dt.date) -> list[str]:
        """The staff of ``leader`` (posted in ``unit`` on ``day``) among ``members`` (everyone
        posted in the unit or below): all but the leader and, when the leader's position has
        a rank, the same unit's leaders whose position has a rank equal or higher (1 = head,
        2 = deputy). The rank rule holds only between ranked leaders: an unranked leader
        counts everyone but herself, and is never left out of another leader's staff for a
        rank she does not have (the rule logs were written under before ranks)."""
        own = self.ranks.get(p.position) if (p := self.posting(leader, day)) else None
        out = []
        for e in members:
            if e == leader:
                continue
            if own is not None:
                posting = self.posting(e, day)
                rank = self.ranks.get(posting.position) if posting is not None else None
                if (
                    posting is not None
                    and posting.unit == unit
                    and self.is_leader(posting.position)
                    and rank is not None
                    and rank <= own
                ):
                    continue
            out.append(e)
        return out

    def members(self, unit: str, day: dt.date) -> list[str]:
        """Employees posted on ``day`` in ``unit`` or a unit below it (sorted)."""
        out = []
        for code, person in self.people.items():
            posting = person.posting_on(day)
            if posting is not None and unit in self.chain(posting.unit):
                out.append(code)
        return sorted(out)


_POLICY_CACHE: dict[str, Policy] = {}


def _parse(document: dict[str, Any]) -> Policy:
    key = json.dumps(document, sort_keys=True, ensure_ascii=False)
    found = _POLICY_CACHE.get(key)
    if found is None:
        if len(_POLICY_CACHE) > 256:
            _POLICY_CACHE.clear()
        found = _POLICY_CACHE[key] = parse_policy(document)
    return found


_FOLD = {
    "org.unit_created": Registry._unit,
    "org.position_defined": Registry._position,
    "employee.registered": Registry._posting,
    "employee.assigned": Registry._posting,
    "employee.transferred": Registry._posting,
    "employee.leave_recorded": Registry._leave,
    "policy.published": Registry._policy,
    "catalogue.published": Registry._catalogue,
    "discipline.imposed": Registry._discipline,
    "discipline.annulled": Registry._annulment,
    "conduct.concluded": Registry._conclusion,
    "period.closed": Registry._close,
    "period.ruling_applied": Registry._period_ruling,
    "appeal.filed": Registry._appeal_filed,
    "appeal.assigned": Registry._appeal,
    "appeal.decided": Registry._appeal,
    "appeal.withdrawn": Registry._appeal,
    "hr.decision_proposed": Registry._hr,
    "hr.decision_issued": Registry._hr,
    "hr.decision_withdrawn": Registry._hr,
    "hr.ruling_applied": Registry._hr,
}

assert set(_FOLD) == REFERENCE_TYPES


def rules_for(registry: Registry, employee: str, period: str) -> Any:
    """The ``Rules`` (``projections/score.py``) that judge ``employee``'s ``period``: the
    posting on the period's first day decides the unit and agency; the policy in force for
    that unit on that day, and the agency's catalogue version in force on it. None when the
    employee had no posting or no policy applied then (nothing can be scored)."""
    from projections.score import Rules

    start = period_start(period)
    posting = registry.posting(employee, start)
    if posting is None:
        return None
    chosen = registry.policy_for(posting.unit, start)
    if chosen is None:
        return None
    agency = registry.agency_of(posting.unit)
    person = registry.people[employee]
    return Rules(
        policy=chosen,
        catalogue=registry.catalogue_for(agency, start),
        unit=posting.unit,
        agency=agency,
        position=posting.position,
        leader=registry.is_leader(posting.position),
        disciplines=tuple(
            Discipline(d.id, d.level, d.decided_on, d.seq, d.annulled_seq)
            for d in person.disciplines.values()
        ),
        conclusions=tuple(person.conclusions),
        posting_seq=posting.seq,
    )
