"""As-of and what-if: a score recomputed from the log itself, never from the read models.

``Replay(view).score(employee, period, as_of=, policy=)`` reads the streams that hold the
facts of that employee's period — their employee and conduct streams, their assessment
stream, the work items and ratings the stream index lists for the period, the units above
them, the policies published for those units, the agency's catalogue and closes — keeping
only entries at or before ``as_of`` (a log position; default the head), folds them with the
same code as the projection runner and scores them with ``projections.score.compute``.
``policy`` scores the same facts under another version of the policy line (or any parsed
policy document) without writing anything: "under the rule in force then" against "under the
rule you claim". ``diff`` (``projections/score.py``) explains the difference of two results.

The stream index is append-only and keyed by the fact that opened each stream (a
``work.assigned`` or ``survey.rated`` names its employee and period, and is never edited);
entries past the index's own position are found by reading the tail of the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from domain.policy import Policy
from domain.schemas import period_start
from domain.signed import stream_id
from projections.facts import Fact, decode, parse_instant
from projections.registry import (
    POSTING_TYPES,
    REFERENCE_TYPES,
    PolicyVersion,
    Registry,
    rules_for,
)
from projections.score import Result, Rules, StaffResult, score_of
from projections.sheet import SHEET_TYPES, subject_key, subject_of
from projections.store import APP_NAME, _ViewSQL


class ReplayError(LookupError):
    """The question cannot be answered from the log (unknown employee, no policy, bad
    position or time, unknown policy version)."""


def parse_as_of(text: str) -> int | str:
    """``as_of`` as people write it: a log position (digits) or an RFC 3339 UTC time, kept as
    text for ``Replay.position``; ``ValueError`` for anything else."""
    if text.isdigit():
        return int(text)
    try:
        parse_instant(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a log position nor an RFC 3339 UTC time") from None
    return text


def _sid(kind: str, key: str) -> str:
    return str(stream_id(kind, key))


class Replay:
    def __init__(self, view: _ViewSQL) -> None:
        self.view = view

    # -- positions ---------------------------------------------------------------------------

    def position(self, as_of: int | str | dt.datetime | None = None) -> int:
        """A log position from a position, an RFC 3339 time (the last entry recorded at or
        before it) or None (the head)."""
        head, _ = self.view.head()
        if as_of is None:
            return head
        if isinstance(as_of, int):
            if as_of < 0 or as_of > head:
                raise ReplayError(f"position {as_of} is not in the log (0 … {head})")
            return as_of
        try:
            when = parse_instant(as_of) if isinstance(as_of, str) else as_of
        except ValueError:
            raise ReplayError(f"{as_of!r} is neither a log position nor an RFC 3339 time") from None
        low, high, found = 0, head, -1
        while low <= high:  # recorded_at never decreases along the log
            mid = (low + high) // 2
            text = self.view.recorded_at(mid)
            if text is not None and parse_instant(text) <= when:
                found, low = mid, mid + 1
            else:
                high = mid - 1
        if found < 0:
            raise ReplayError(f"nothing was recorded at or before {as_of}")
        return found

    # -- reading -----------------------------------------------------------------------------

    def _indexed(self, subjects: list[str], upto: int) -> list[str]:
        streams = self.view.streams_of(subjects, upto)
        tracked = self.view.max_tracking_id(APP_NAME) or 0  # type: ignore[attr-defined]
        indexed_to = self.view.seq_for_notification(tracked) if tracked else -1
        after = tracked
        while indexed_to < upto:  # the index lags: read the tail of the log for new streams
            page = self.view.log_page(after, 5000)
            for row in page:
                if row.seq > upto:
                    return streams
                fact = decode(row.seq, row.stream, row.state)
                if fact.type in ("work.assigned", "survey.rated"):
                    named = subject_of(fact)
                    if named is not None and subject_key(*named) in subjects:
                        streams.append(row.stream)
                elif fact.type in POSTING_TYPES and "unit:" + fact.data["unit"] in subjects:
                    streams.append(row.stream)
            if len(page) < 5000:
                break
            after, indexed_to = page[-1].notification_id, page[-1].seq
        return streams

    def registry(self, employee: str, period: str, upto: int) -> tuple[Registry, list[Fact]]:
        """The reference facts one score needs (registry) and the sheet's facts."""
        registry, sheets = self.read(employee, period=period, upto=upto)
        return registry, sheets[subject_key(employee, period)]

    def read(self, *people: str, period: str, upto: int) -> tuple[Registry, dict[str, list[Fact]]]:
        """What the scores of ``people``'s ``period`` need, in a few queries for all of them:
        one registry of the reference facts, and each sheet's facts by subject key."""
        registry = Registry()
        subjects = [subject_key(e, period) for e in people]
        streams = [
            *(_sid("employee", e) for e in people),
            *(_sid("conduct", e) for e in people),
            *(_sid("assessment", s) for s in subjects),
            *self._indexed(subjects, upto),
        ]
        sheets: dict[str, list[Fact]] = {s: [] for s in subjects}
        owner: dict[str, str] = {}  # work stream -> subject (named by its assignment)
        for f in self.view.stream_facts(streams, upto):  # log order: assignments first
            if f.type in REFERENCE_TYPES:
                registry.apply(f)
                continue
            if f.type not in SHEET_TYPES:
                continue
            named = subject_of(f)
            key = subject_key(*named) if named is not None else owner.get(f.stream)
            if named is not None and f.type == "work.assigned":
                owner[f.stream] = subject_key(*named)
            if key in sheets:
                sheets[key].append(f)
        start = period_start(period)
        postings = [p for e in people if (p := registry.posting(e, start)) is not None]
        if not postings:
            return registry, sheets
        self._organisation(registry, sorted({p.unit for p in postings}), upto)
        more: dict[str, None] = {}
        for posting in postings:
            agency = registry.agency_of(posting.unit)
            for unit in registry.chain(posting.unit):
                more[_sid("policies", unit)] = None
            more[_sid("catalogue", agency)] = None
            more[_sid("periods", agency)] = None
            more[_sid("position", posting.position)] = None
        for f in self.view.stream_facts(list(more), upto):
            registry.apply(f)
        return registry, sheets

    def _organisation(self, registry: Registry, units: list[str], upto: int) -> None:
        """Fold the units and their ancestors, one level per query."""
        todo = [u for u in units if u not in registry.parents]
        while todo:
            for f in self.view.stream_facts([_sid("unit", u) for u in todo], upto):
                registry.apply(f)
            todo = [
                p
                for u in todo
                if (p := registry.parents.get(u)) is not None and p not in registry.parents
            ]

    # -- scores ------------------------------------------------------------------------------

    def score(
        self,
        employee: str,
        period: str,
        *,
        as_of: int | str | dt.datetime | None = None,
        policy: int | Policy | None = None,
        _depth: int = 0,
    ) -> Result:
        """The score of ``employee``'s ``period`` from the log as of ``as_of``, under the policy
        in force then, another version of that policy line (``policy`` = its version number)
        or a given ``Policy``."""
        upto = self.position(as_of)
        return self._score(employee, period, upto, policy, _depth)

    def _score(
        self,
        employee: str,
        period: str,
        upto: int,
        policy: int | Policy | PolicyVersion | None,
        depth: int,
    ) -> Result:
        registry, sheet_facts = self.registry(employee, period, upto)
        if employee not in registry.people:
            raise ReplayError(f"no employee {employee!r} in the log up to position {upto}")
        rules = rules_for(registry, employee, period)
        if rules is None:
            raise ReplayError(
                f"{employee!r} had no posting or no policy in force on the first day of {period}"
            )
        leads = rules.leader and rules.policy.policy.leader_unit is not None
        if not sheet_facts and not leads:  # as the projection: no facts, no score
            raise ReplayError(
                f"nothing recorded for {employee!r} in {period} up to position {upto}"
            )
        version = None
        if isinstance(policy, PolicyVersion):
            if policy.policy.id == rules.policy.policy.id:
                version = policy
        elif policy is not None:
            version = self._other_policy(registry, rules, policy)
        if version is not None:
            rules = dataclasses.replace(rules, policy=version)
        if leads and depth < 4:
            staff = self._staff(registry, employee, rules.unit, period, upto)
            results = self._staff_results(staff, period, upto, version, depth + 1)
            rules = dataclasses.replace(rules, subordinates=tuple(results))
        return score_of(sheet_facts, employee, period, rules)

    def _staff_results(
        self,
        staff: list[str],
        period: str,
        upto: int,
        version: PolicyVersion | None,
        depth: int,
    ) -> list[StaffResult]:
        """The results of a leader's staff, read together (under ``version`` for those its
        policy line judges); a staff member who leads a unit of their own is scored on their
        own (their grade needs their staff's)."""
        registry, sheets = self.read(*staff, period=period, upto=upto)
        out = []
        for other in staff:
            rules = rules_for(registry, other, period) if other in registry.people else None
            sheet = sheets[subject_key(other, period)]
            if rules is None or (not sheet and not rules.leader):
                continue  # not posted then, or nothing recorded: not part of the unit's result
            if rules.leader and rules.policy.policy.leader_unit is not None:
                try:
                    result = self._score(other, period, upto, version, depth)
                except ReplayError:
                    continue
            else:
                if version is not None and version.policy.id == rules.policy.policy.id:
                    rules = dataclasses.replace(rules, policy=version)
                result = score_of(sheet, other, period, rules)
            out.append(StaffResult.of(result))
        return out

    def _posted(self, unit: str, upto: int, known: Registry | None = None) -> Registry:
        """A registry of everyone ever posted in ``unit`` or below (their postings and the
        units above theirs), as the log stood at ``upto``; the units ``known`` holds are not
        read again (it learns those read)."""
        streams = self._indexed([f"unit:{unit}"], upto)
        members = Registry()
        for f in self.view.stream_facts(streams, upto):
            members.apply(f)
        if known is not None:
            members.parents, members.kinds = known.parents, known.kinds
        self._organisation(
            members, sorted({p.unit for x in members.people.values() for p in x.postings}), upto
        )
        return members

    def _staff(
        self, registry: Registry, leader: str, unit: str, period: str, upto: int
    ) -> list[str]:
        """``leader``'s staff: everyone posted in ``unit`` or below on the period's first day,
        but the leader and the same unit's leaders of equal or higher rank
        (``Registry.staff``)."""
        members = self._posted(unit, upto, registry)
        day = period_start(period)
        everyone = members.members(unit, day)
        here = {p.position for e in everyone if (p := members.posting(e, day)) and p.unit == unit}
        for f in self.view.stream_facts([_sid("position", x) for x in sorted(here)], upto):
            members.apply(f)
        return members.staff(leader, unit, everyone, day)

    # -- a unit ------------------------------------------------------------------------------

    def unit(
        self,
        agency: str,
        period: str,
        *,
        as_of: int | str | dt.datetime | None = None,
        policy: int | Policy | None = None,
    ) -> dict[str, Any]:
        """The unit view of ``agency``'s ``period`` (``engine.unit_view``, the same quota
        code) recomputed from the log as of ``as_of``, under the policy in force then or
        under ``policy`` (a version number of the agency's policy line, or a ``Policy``):
        everyone posted in the agency on the period's first day is scored as the projection
        scores them (those with facts of the period, and the leaders over someone who has
        some), leaders after their staff, whose grades under the same policy give the leader
        factor. Nothing is written."""
        from projections.engine import unit_view  # the engine imports this module's users

        upto = self.position(as_of)
        day = period_start(period)
        everyone = self._posted(agency, upto).members(agency, day)
        registry, sheets = self.read(*everyone, period=period, upto=upto)
        rules: dict[str, Rules] = {}
        for e in everyone:
            found = rules_for(registry, e, period) if e in registry.people else None
            if found is not None:
                rules[e] = found
        people = sorted(rules, key=lambda e: subject_key(e, period))
        if not people:
            raise ReplayError(f"no one was posted in {agency!r} in {period} up to position {upto}")
        # the policy of the first in key order, as the projection's unit view chooses it
        chosen = rules[people[0]].policy
        other = (
            self._other_policy(registry, rules[people[0]], policy) if policy is not None else None
        )
        line = chosen.policy.id

        def has_facts(e: str) -> bool:
            return bool(sheets[subject_key(e, period)])

        def leads(e: str) -> bool:
            r = rules[e]
            return r.leader and r.policy.policy.leader_unit is not None

        def scored(e: str) -> bool:  # as the projection: facts, or a leader over someone's
            if has_facts(e):
                return True
            if not leads(e):
                return False
            below = registry.members(rules[e].unit, day)
            return any(x != e and x in rules and has_facts(x) for x in below)

        results: dict[str, Result] = {}

        def result(e: str) -> Result:
            if e not in results:
                r = rules[e]
                if other is not None and r.policy.policy.id == line:
                    r = dataclasses.replace(r, policy=other)
                if leads(e):
                    members = registry.members(r.unit, day)
                    staff = registry.staff(e, r.unit, members, day)
                    r = dataclasses.replace(
                        r,
                        subordinates=tuple(
                            StaffResult.of(result(s)) for s in staff if s in rules and scored(s)
                        ),
                    )
                results[e] = score_of(sheets[subject_key(e, period)], e, period, r)
            return results[e]

        docs = [
            result(e).to_doc(trace=False) for e in people if scored(e) and rules[e].agency == agency
        ]
        if not docs:
            raise ReplayError(f"no scores for {agency!r} in {period} up to position {upto}")
        version = other if other is not None else chosen
        return unit_view(agency, period, docs, version.policy, max(d["as_of"] for d in docs))

    def _other_policy(
        self, registry: Registry, rules: Rules, policy: int | Policy
    ) -> PolicyVersion:
        if isinstance(policy, Policy):
            return PolicyVersion(policy, rules.policy.scope, -1)
        line = rules.policy.policy.id
        upto = self.view.head()[0]
        scopes = list(registry.policies)
        wider = Registry()
        for f in self.view.stream_facts([_sid("policies", s) for s in scopes], upto):
            wider.apply(f)
        for version in wider.policy_versions(line):
            if version.policy.version == policy:
                return version
        known = sorted(v.policy.version for v in wider.policy_versions(line))
        raise ReplayError(f"policy {line} has no version {policy} (published: {known})")
