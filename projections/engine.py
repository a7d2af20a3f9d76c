"""The evaluation projection: folds the log, in batches, into the read models.

Each batch of entries (in log order) is folded into the registry (reference facts, in
memory) and into the sheets of the employee periods it touches; then every touched period is
scored again (``projections/score.py``), and the views that depend on those scores — the
year, the unit view with the quota, the close snapshot, the "HR decision due" items, the
appeals and the flags — are recomputed. Everything the batch changed is written with the
tracking position in **one transaction**; a crash loses nothing and repeats nothing.

Memory does not grow with the log: sheets live in the views (``kpi_view_sheet_rows``, one row
appended per fact) and only a bounded cache of them stays in memory; the registry grows with
the organisation only.

Views (``kpi_view_docs.view``), each a JSON document:

| view | key | what |
|---|---|---|
| ``score`` | ``employee/period`` | the ``Result``: components, total, grades |
| ``trace`` | ``employee/period`` | its trace: one line per fact, then the arithmetic |
| ``quarter`` | ``employee/YYYY-Qn`` | mean of the quarter's month totals (months worked) |
| ``year`` | ``employee/YYYY`` | mean of months worked, leave months excluded, overrides |
| ``unit`` | ``agency/period`` | distribution by grade, the quota check, final grades |
| ``snapshot`` | ``agency/period`` | the close: recorded and recomputed hash |
| ``appeal`` | ``appellant/appeal`` | status, answer deadline |
| ``hr_due`` | ``employee/YYYY`` | consecutive failing years: a person must act before ``due`` |
| ``flag`` | ``kind/subject/seq`` | an anti-gaming signal with the facts that raised it |
| ``evidence`` | sha-256 | the claims of a piece of evidence (the first of each employee period) |
| ``late_entry`` | ``agency/request`` | a late-entry request: its position and its approval's |
| ``approvals`` | ``approver/agency/period`` | approvals per local day (bulk approval flag) |
| ``finding`` | finding id | an inspector's finding, as recorded, with the positions it cites |
| ``hr_decision`` | decision id | an HR decision, its acts, the closes of the periods it cites |
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from eventsourcing.persistence import Tracking

from domain.policy import Policy
from domain.schemas import period_start
from projections.facts import Fact, decode, parse_day, parse_instant
from projections.registry import (
    POSTING_TYPES,
    REFERENCE_TYPES,
    Registry,
    rules_for,
)
from projections.score import (
    ItemCache,
    Result,
    Rules,
    StaffResult,
    compute,
    discipline_overrides,
    exact,
    lowest,
    show,
)
from projections.sheet import SHEET_TYPES, Sheet, subject_key, subject_of
from projections.store import APP_NAME, LogRow, Put, SheetRow, _ViewSQL

#: the read models ``kpi-ledger show`` prints
VIEWS = (
    "score",
    "trace",
    "quarter",
    "year",
    "unit",
    "snapshot",
    "appeal",
    "hr_due",
    "flag",
    "finding",
    "hr_decision",
)
REF = "ref"  # the stream-index subject of reference streams
FINDING = "inspection.finding_recorded"
LATE_ENTRY_TYPES = ("period.late_entry_requested", "period.late_entry_approved")
BATCH = 10000
SHEET_CACHE = 3072
SETTLE_CHUNK = 1000  # periods scored per transaction when settling
MAX_PENDING = 20000  # periods left unscored before a catch-up settles mid-way
PENDING = ("pending", "evaluations")  # the document that lists them
ITEM_CACHE = 16384  # item results kept between scorings of a period (score.ItemCache)


def snapshot_hash(doc: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a snapshot document (sorted keys, no spaces,
    UTF-8): what ``period.closed`` carries as ``snapshot``."""
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Pending:
    """What is folded but not yet scored: periods whose sheets changed, and the unit, year
    and appeal views to recompute after them. Stored (``PENDING``) with every commit, so a
    restarted runner scores them; empty whenever the views are at the head of the log."""

    dirty: dict[str, None] = field(default_factory=dict)  # subject keys, insertion ordered
    units: dict[tuple[str, str], None] = field(default_factory=dict)
    years: dict[tuple[str, str], None] = field(default_factory=dict)
    appeals: dict[tuple[str, str], None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.dirty or self.units or self.years or self.appeals)

    def to_doc(self) -> dict[str, Any]:
        return {
            "dirty": list(self.dirty),
            "units": [list(k) for k in self.units],
            "years": [list(k) for k in self.years],
            "appeals": [list(k) for k in self.appeals],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> _Pending:
        if doc is None:
            return cls()
        return cls(
            dict.fromkeys(doc["dirty"]),
            {(a, b): None for a, b in doc["units"]},
            {(a, b): None for a, b in doc["years"]},
            {(a, b): None for a, b in doc["appeals"]},
        )


@dataclass
class _Batch:
    pending: _Pending
    puts: dict[tuple[str, str], Put] = field(default_factory=dict)
    by_view: dict[str, dict[str, Put]] = field(default_factory=dict)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # known first claims
    rules: dict[str, Rules | None] = field(default_factory=dict)  # by subject, until a ref fact
    closes: dict[str, Any] = field(default_factory=dict)  # by subject, until a ref fact
    streams: list[tuple[str, str, int]] = field(default_factory=list)
    rows: list[SheetRow] = field(default_factory=list)  # sheet rows folded, not yet stored
    deletes: dict[tuple[str, str], None] = field(default_factory=dict)  # flags withdrawn
    outliers: dict[str, Policy] = field(default_factory=dict)  # periods whose units changed
    rows_by_subject: dict[str, list[tuple[str | None, list[Any]]]] = field(default_factory=dict)

    # this batch's documents by the columns ``find`` filters on, so that merging them over
    # the stored ones costs what the bucket holds, not a scan of the batch
    by_employee: dict[tuple[str, str], dict[str, Put]] = field(default_factory=dict)
    by_place: dict[tuple[str, str, str], dict[str, Put]] = field(default_factory=dict)

    @property
    def dirty(self) -> dict[str, None]:
        return self.pending.dirty

    @property
    def units(self) -> dict[tuple[str, str], None]:
        return self.pending.units

    @property
    def years(self) -> dict[tuple[str, str], None]:
        return self.pending.years

    @property
    def appeals(self) -> dict[tuple[str, str], None]:
        return self.pending.appeals

    def unput(self, view: str, key: str) -> None:
        old = self.puts.pop((view, key))
        self.by_view[view].pop(key, None)
        if old.employee is not None:
            self.by_employee[(old.view, old.employee)].pop(old.key, None)
        if old.agency is not None:
            self.by_place[(old.view, old.agency, old.period or "")].pop(old.key, None)

    def put(self, p: Put) -> None:
        old = self.puts.get((p.view, p.key))
        if old is not None:  # it may have moved (a transfer changes a score's agency)
            if old.employee is not None:
                self.by_employee[(old.view, old.employee)].pop(old.key, None)
            if old.agency is not None:
                self.by_place[(old.view, old.agency, old.period or "")].pop(old.key, None)
        self.puts[(p.view, p.key)] = p
        self.by_view.setdefault(p.view, {})[p.key] = p
        if p.employee is not None:
            self.by_employee.setdefault((p.view, p.employee), {})[p.key] = p
        if p.agency is not None:
            self.by_place.setdefault((p.view, p.agency, p.period or ""), {})[p.key] = p


class Evaluations:
    """The projection. ``process(rows)`` folds a batch of log rows and commits it."""

    name = "evaluations"

    def __init__(self, view: _ViewSQL, *, sheet_cache: int = SHEET_CACHE) -> None:
        self.view = view
        self._sheets: OrderedDict[str, Sheet] = OrderedDict()
        self._sheet_cache = sheet_cache
        self._stream_subjects: OrderedDict[str, str] = OrderedDict()
        self._staff: dict[Any, tuple[dict[str, list[str]], dict[str, list[str]]]] = {}
        self._items: ItemCache = {}
        self._reload()

    # -- the fold ----------------------------------------------------------------------------

    def process(self, rows: Sequence[LogRow], *, settle: bool = True) -> int:
        """Fold ``rows`` (consecutive, in log order, after the current position); returns how
        many were new. The rows' facts and the tracking position are committed in one
        transaction; then, with ``settle``, every pending period is scored (in transactions
        of ``SETTLE_CHUNK`` periods). Without it, scoring waits for a later call: a catch-up
        far behind the head scores each period once, not once per batch that touched it."""
        rows = [r for r in rows if r.notification_id > self.position]
        try:
            if rows:
                self._process(rows)
            if settle and self.pending:
                self.settle()
        except BaseException:
            self._reload()  # memory may be ahead of what was committed: start again from it
            raise
        return len(rows)

    def settle(self) -> None:
        """Score every pending period and recompute the views that follow; committed in
        chunks (no new log rows, so the tracking position does not move)."""
        while self.pending.dirty:
            batch = _Batch(self.pending)
            self._settle(batch, limit=SETTLE_CHUNK)
            self._commit(batch, None)
        batch = _Batch(self.pending)
        self._views(batch)
        self._commit(batch, None)

    @property
    def current(self) -> bool:
        """Whether every view reflects ``seq`` (nothing folded is waiting to be scored)."""
        return not self.pending

    def _commit(self, batch: _Batch, tracking: Tracking | None) -> None:
        for period, policy in sorted(batch.outliers.items()):
            self._outliers(period, policy, batch)
        batch.outliers.clear()
        batch.put(Put(*PENDING, self.pending.to_doc()))
        self.view.commit(
            batch.puts.values(),
            batch.streams,
            tracking,
            deletes=list(batch.deletes),
            sheet_rows=batch.rows,
        )

    def _reload(self) -> None:
        """Memory as of the committed position: the registry re-read, caches emptied."""
        self.position = self.view.max_tracking_id(APP_NAME) or 0  # type: ignore[attr-defined]
        self.seq = self.view.seq_for_notification(self.position) if self.position else -1
        self.registry = Registry()
        self._sheets.clear()
        self._stream_subjects.clear()
        self._items.clear()
        self.pending = _Pending.from_doc(self.view.doc(*PENDING))
        if self.seq >= 0:
            for fact in self.view.stream_facts(self.view.streams_of([REF]), self.seq):
                self.registry.apply(fact)

    def _process(self, rows: Sequence[LogRow]) -> None:
        batch = _Batch(self.pending)
        facts = [decode(r.seq, r.stream, r.state) for r in rows]
        self._subjects_of_streams(facts)
        hashes = sorted(
            {h for f in facts if f.type == "work.declared" for h in f.data.get("evidence", ())}
        )
        batch.evidence = self.view.docs("evidence", hashes) if hashes else {}
        for fact in facts:
            if fact.type in REFERENCE_TYPES:
                self._reference(fact, batch)
            elif fact.type in SHEET_TYPES:
                self._sheet_fact(fact, batch)
            elif fact.type == FINDING:
                self._finding(fact, batch)
            elif fact.type in LATE_ENTRY_TYPES:
                self._late_entry(fact, batch)
        last = rows[-1]
        self._commit(batch, Tracking(APP_NAME, last.notification_id))
        self.position, self.seq = last.notification_id, last.seq

    def catch_up(
        self, *, limit: int | None = None, progress: Callable[[int], object] | None = None
    ) -> int:
        """Process every entry after the current position (at most ``limit``)."""
        done = 0
        while limit is None or done < limit:
            size = BATCH if limit is None else min(BATCH, limit - done)
            page = self.view.log_page(self.position, size)
            if not page:
                break
            last = len(page) < size or (limit is not None and done + len(page) >= limit)
            done += self.process(page, settle=last or len(self.pending.dirty) > MAX_PENDING)
            if progress is not None:
                progress(done)
            if len(page) < size:
                break
        if self.pending:
            self.settle()
        return done

    def _subjects_of_streams(self, facts: list[Fact]) -> None:
        """Look up, in one query, the subjects of work streams the cache does not know."""
        unknown = {
            f.stream
            for f in facts
            if f.type in SHEET_TYPES
            and f.type != "work.assigned"
            and f.type.startswith("work.")
            and f.stream not in self._stream_subjects
        }
        if unknown:
            for stream, subject in self.view.subjects_of_streams(sorted(unknown)).items():
                self._remember(stream, subject)

    def _remember(self, stream: str, subject: str) -> None:
        self._stream_subjects[stream] = subject
        self._stream_subjects.move_to_end(stream)
        if len(self._stream_subjects) > 8 * self._sheet_cache:
            self._stream_subjects.popitem(last=False)

    def _sheet(self, key: str, batch: _Batch) -> Sheet:
        sheet = self._sheets.get(key)
        if sheet is None:  # its stored rows, then those this batch has not stored yet
            rows = self.view.sheet_rows(key) + batch.rows_by_subject.get(key, [])
            employee, period = key.split("/", 1)
            sheet = Sheet.from_rows(employee, period, rows)
            self._sheets[key] = sheet
            if len(self._sheets) > self._sheet_cache:
                self._sheets.popitem(last=False)
        self._sheets.move_to_end(key)
        return sheet

    def _sheet_fact(self, fact: Fact, batch: _Batch) -> None:
        named = subject_of(fact)
        if named is not None:
            key = subject_key(*named)
            if fact.type in ("work.assigned", "survey.rated"):
                batch.streams.append((key, fact.stream, fact.seq))
                self._remember(fact.stream, key)
        else:
            found = self._stream_subjects.get(fact.stream)
            if found is None:
                return  # a work fact on a stream without an assignment: cannot be scored
            key = found
        item = None
        if fact.type.startswith("work."):
            item = fact.data.get("item") or fact.data.get("target", {}).get("item")
        sheet = self._sheet(key, batch)
        added = sheet.apply(fact, item)
        if added is not None:
            batch.rows.append(SheetRow(key, fact.seq, *added))
            batch.rows_by_subject.setdefault(key, []).append(added)
        batch.dirty[key] = None
        if fact.type == "work.declared":
            self._evidence(fact, key, batch)
        elif fact.type == "work.approved":
            self._approval(fact, key, batch)
        close = self._close_of(key, batch)
        if close is not None and fact.seq > close.seq and not fact.type.endswith("ruling_applied"):
            self._after_close(fact, key, close, batch)

    def _rules(self, key: str, batch: _Batch) -> Rules | None:
        """``rules_for`` the subject, once per batch (reference facts clear the cache)."""
        if key not in batch.rules:
            batch.rules[key] = rules_for(self.registry, *key.split("/", 1))
        return batch.rules[key]

    def _close_of(self, key: str, batch: _Batch) -> Any:
        """The close of the agency ``key``'s period belongs to (None while open); looked up
        once per batch, like the rules (reference facts clear both)."""
        if key not in batch.closes:
            batch.closes[key] = self._find_close(key)
        return batch.closes[key]

    def _find_close(self, key: str) -> Any:
        employee, period = key.split("/", 1)
        posting = self.registry.posting(employee, period_start(period))
        if posting is None:
            return None
        return self.registry.closes.get((self.registry.agency_of(posting.unit), period))

    def _reference(self, fact: Fact, batch: _Batch) -> None:
        batch.streams.append((REF, fact.stream, fact.seq))
        batch.rules.clear()
        batch.closes.clear()
        if fact.type in POSTING_TYPES:
            unit = fact.data["unit"]
            self.registry.apply(fact)
            for ancestor in self.registry.chain(unit):
                batch.streams.append((f"unit:{ancestor}", fact.stream, fact.seq))
            self._touch_employee(fact.data["employee"], batch, since=fact.data["since"])
            return
        self.registry.apply(fact)
        t, d = fact.type, fact.data
        if t in (
            "discipline.imposed",
            "discipline.annulled",
            "conduct.concluded",
            "employee.leave_recorded",
        ):
            self._touch_employee(d["employee"], batch)
        elif t in ("policy.published", "catalogue.published"):
            effective = d["document"]["effective_from"] if "document" in d else d["effective_from"]
            self._touch_from(parse_day(effective), batch)
        elif t == "period.closed":
            place = (d["agency"], d["period"])
            self._settle(batch, place=place)  # the snapshot is of the result before the close
            self._views(batch, place)
            self._snapshot(d["agency"], d["period"], batch, fact)
            for key in self.view.keys("score", agency=d["agency"], period=d["period"]):
                batch.years[(key.split("/")[0], d["period"][:4])] = None
        elif t == "period.ruling_applied":
            target = d["target"]
            self._snapshot(target["agency"], target["period"], batch, None)
        elif t.startswith("appeal."):
            appellant = d.get("appellant", fact.actor)
            batch.appeals[(appellant, d["appeal"])] = None
        elif t.startswith("hr."):
            decision = self.registry.hr_decisions.get(d.get("decision") or d["target"]["decision"])
            if decision is None:
                return
            self._hr_decision(decision, fact, batch)
            for key in self.view.keys("year", employee=decision.employee):
                batch.years[(decision.employee, key.split("/")[1])] = None

    def _touch_employee(self, employee: str, batch: _Batch, since: str | None = None) -> None:
        keys = {
            *self.view.sheet_subjects(employee),
            *self.view.keys("score", employee=employee),
        }
        keys.update(batch.by_employee.get(("score", employee), {}))
        keys.update(k for k in batch.rows_by_subject if k.startswith(employee + "/"))
        keys.update(k for k in self._sheets if k.startswith(employee + "/"))
        for key in sorted(keys):
            period = key.split("/", 1)[1]
            if since is None or period_start(period) >= parse_day(since).replace(day=1):
                batch.dirty[key] = None
            batch.years[(employee, period[:4])] = None

    def _touch_from(self, day: Any, batch: _Batch) -> None:
        """Periods starting on or after ``day`` (a publication never changes an earlier one)."""
        keys = {*self.view.sheet_subjects(), *self.view.keys("score"), *self._sheets}
        keys.update(batch.by_view.get("score", {}), batch.rows_by_subject)
        for key in sorted(keys):
            if period_start(key.split("/", 1)[1]) >= day:
                batch.dirty[key] = None

    # -- scoring and the views that follow ---------------------------------------------------

    def _settle(
        self, batch: _Batch, *, place: tuple[str, str] | None = None, limit: int | None = None
    ) -> None:
        """Score the dirty periods (only those of ``place``, an agency and period about to
        close; at most ``limit``). Staff are scored before the leaders over them, and
        leaders of lower units before those above (a leader's score reads the grades of
        everyone in their unit). The views that follow are left to ``_views``."""
        keys = list(batch.dirty)
        if place is not None:
            agency, period = place
            keys = [
                k
                for k in keys
                if k.endswith("/" + period) and (r := self._rules(k, batch)) and r.agency == agency
            ]
        if limit is not None:
            keys = keys[:limit]
        for key in keys:
            del batch.dirty[key]
        self._staff.clear()  # postings may have changed since the last settle
        changed: list[Result] = []
        leaders: dict[str, int] = {}  # leader's key -> depth of their unit
        for key in keys:
            if self._leader_depth(key, batch) is not None:
                self._leaders_over(key, batch, leaders)
                continue
            result = self._score(key, batch)
            if result is not None:
                changed.append(result)
                self._leaders_over(key, batch, leaders)
        # lower units first; in one unit, unranked leaders, then deputies before the head
        # (whose staff they are)
        for key in sorted(leaders, key=lambda k: (-leaders[k], -self._rank(k, batch))):
            result = self._score(key, batch)
            if result is not None:
                changed.append(result)
        for result in changed:
            batch.units[(result.agency, result.period)] = None
            batch.years[(result.employee, result.period[:4])] = None

    def _leader_depth(self, key: str, batch: _Batch) -> int | None:
        """How deep the unit of a leader's position lies (None: not scored as a leader)."""
        rules = self._rules(key, batch)
        if rules is None or not rules.leader or rules.policy.policy.leader_unit is None:
            return None
        return len(self.registry.chain(rules.unit))

    def _rank(self, key: str, batch: _Batch) -> int:
        """The rank of the leader's position for the scoring order (1 = head, 2 = deputy;
        ``Registry.staff``). An unranked leader orders as 10, before every ranked one: she is
        in a ranked leader's staff whatever his rank; among unranked leaders only, the order
        is the one before ranks."""
        rules = self._rules(key, batch)
        return self.registry.ranks.get(rules.position, 10) if rules is not None else 10

    def _leaders_over(self, key: str, batch: _Batch, leaders: dict[str, int]) -> None:
        """Add to ``leaders`` the leader's own key and every leader over the subject's unit,
        recursively (a leader's result changes theirs)."""
        rules = self._rules(key, batch)
        if rules is None:
            return
        depth = self._leader_depth(key, batch)
        if depth is not None:
            if key in leaders:
                return
            leaders[key] = depth
        employee, period = key.split("/", 1)
        led = self._staff_on(period_start(period))[1]
        for unit in self.registry.chain(rules.unit):
            for leader in led.get(unit, ()):
                other = subject_key(leader, period)
                if leader != employee and other not in leaders:
                    self._leaders_over(other, batch, leaders)

    def _views(self, batch: _Batch, place: tuple[str, str] | None = None) -> None:
        """The views that follow the scores: only ``place``'s unit view before its close (the
        rest, and the years and appeals, wait for the next settle)."""
        if place is not None:
            if place in batch.units:
                self._unit(*place, batch)
                del batch.units[place]
            return
        for agency, period in list(batch.units):
            self._unit(agency, period, batch)
            del batch.units[(agency, period)]
        for employee, year in list(batch.years):
            self._year(employee, year, batch)
        batch.years.clear()
        for appellant, appeal in list(batch.appeals):
            self._appeal(appellant, appeal, batch)
        batch.appeals.clear()

    def _score(self, key: str, batch: _Batch) -> Result | None:
        sheet = self._sheet(key, batch)
        rules = self._rules(key, batch)
        if rules is None:
            return None
        if rules.leader and rules.policy.policy.leader_unit is not None:
            day = period_start(sheet.period)
            members = self._staff_on(day)[0].get(rules.unit, [])
            staff = self.registry.staff(sheet.employee, rules.unit, members, day)
            found = self._scores([subject_key(e, sheet.period) for e in staff], batch)
            rules = replace(
                rules,
                subordinates=tuple(StaffResult.of_doc(d) for d in found.values()),
            )
        if len(self._items) > ITEM_CACHE:
            self._items.clear()
        result = compute(sheet, rules, items=self._items)
        self._sheet_flags(sheet, rules, batch)
        where = (result.employee, result.agency, result.period)
        batch.put(Put("score", key, result.to_doc(trace=False), *where))
        trace = [line.to_doc() for line in result.trace]
        batch.put(
            Put(
                "trace",
                key,
                {"employee": key.split("/")[0], "period": result.period, "trace": trace},
                *where,
            )
        )
        return result

    def _staff_on(self, day: Any) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Who is posted on ``day`` under each unit (the unit and those below it), and who
        holds a leader's position in each unit: one pass over the people per settle."""
        found = self._staff.get(day)
        if found is None:
            members: dict[str, list[str]] = {}
            leaders: dict[str, list[str]] = {}
            for code in sorted(self.registry.people):
                posting = self.registry.people[code].posting_on(day)
                if posting is None:
                    continue
                for unit in self.registry.chain(posting.unit):
                    members.setdefault(unit, []).append(code)
                if self.registry.is_leader(posting.position):
                    leaders.setdefault(posting.unit, []).append(code)
            found = self._staff[day] = (members, leaders)
        return found

    def _scores(self, keys: Sequence[str], batch: _Batch) -> dict[str, dict[str, Any]]:
        """Score documents, this batch's first."""
        out = self.view.docs("score", [k for k in keys if ("score", k) not in batch.puts])
        for k in keys:
            put = batch.puts.get(("score", k))
            if put is not None:
                out[k] = put.doc
        return out

    def _docs_where(
        self,
        view: str,
        batch: _Batch,
        *,
        employee: str | None = None,
        agency: str | None = None,
        period: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Documents of ``view`` for one employee, or one agency and period: the stored ones,
        with this batch's writes over them (a document the batch moved elsewhere left out)."""
        if employee is not None:
            stored = self.view.find(view, employee=employee)
            ours = batch.by_employee.get((view, employee), {})
        else:
            assert agency is not None and period is not None
            stored = self.view.find(view, agency=agency, period=period)
            ours = batch.by_place.get((view, agency, period), {})
        found = {}
        for d in stored:
            key = self._key_of(view, d)
            if (view, key) not in batch.puts:
                found[key] = d
        for key, put in ours.items():
            found[key] = put.doc
        return found

    @staticmethod
    def _key_of(view: str, doc: dict[str, Any]) -> str:
        if view == "unit":
            return f"{doc['agency']}/{doc['period']}"
        if view == "approvals":
            return f"{doc['approver']}/{doc['agency']}/{doc['period']}"
        return f"{doc['employee']}/{doc['period']}"

    def _unit(self, agency: str, period: str, batch: _Batch) -> None:
        scores = self._docs_where("score", batch, agency=agency, period=period)
        results = [scores[k] for k in sorted(scores)]
        if not results:
            return
        start = period_start(period)
        chosen = None
        for doc in results:
            posting = self.registry.posting(doc["employee"], start)
            if posting is not None:
                chosen = self.registry.policy_for(posting.unit, start)
                break
        if chosen is None:
            return
        as_of = max(int(r["as_of"]) for r in results)
        doc = unit_view(agency, period, results, chosen.policy, as_of)
        batch.put(Put("unit", f"{agency}/{period}", doc, None, agency, period))
        self._bulk_flags(agency, period, chosen.policy, batch)
        batch.outliers[period] = chosen.policy

    def _snapshot(self, agency: str, period: str, batch: _Batch, close: Fact | None) -> None:
        unit = self._docs_where("unit", batch, agency=agency, period=period)
        recorded = self.registry.closes.get((agency, period))
        if recorded is None:
            return
        doc = unit.get(f"{agency}/{period}")
        published = snapshot_document(agency, period, doc["results"] if doc else [], recorded.seq)
        computed = snapshot_hash(published)
        set_aside = sorted(
            e for (a, p, e) in self.registry.set_aside if a == agency and p == period
        )
        key = f"{agency}/{period}"
        previous = batch.puts.get(("snapshot", key))
        if close is None:  # a ruling set a classification aside: keep the close's own figures
            base = previous.doc if previous is not None else self.view.doc("snapshot", key)
            if base is None:
                return
            base = dict(base, set_aside=set_aside)
            batch.put(Put("snapshot", key, base, None, agency, period))
            return
        batch.put(
            Put(
                "snapshot",
                key,
                {
                    "agency": agency,
                    "period": period,
                    "close_seq": recorded.seq,
                    "closed_at": recorded.at.isoformat().replace("+00:00", "Z"),
                    "closed_by": recorded.by,
                    "recorded": recorded.snapshot,
                    "computed": computed,
                    "matches": computed == recorded.snapshot,
                    "published": published,
                    "set_aside": set_aside,
                },
                None,
                agency,
                period,
            )
        )

    def _year(self, employee: str, year: str, batch: _Batch) -> None:
        scores = self._docs_where("score", batch, employee=employee)
        months = [scores[k] for k in sorted(scores) if scores[k]["period"].startswith(year + "-")]
        if not months:
            return
        person = self.registry.people.get(employee)
        if person is None:
            return
        last = months[-1]
        posting = self.registry.posting(employee, period_start(last["period"]))
        if posting is None:
            return
        chosen = self.registry.policy_for(posting.unit, period_start(last["period"]))
        if chosen is None:
            return
        doc = year_view(employee, year, months, person, chosen.policy, self.registry)
        batch.put(Put("year", f"{employee}/{year}", doc, employee, doc["agency"], year))
        for quarter, qdoc in quarter_views(employee, months, person, chosen.policy).items():
            batch.put(
                Put("quarter", f"{employee}/{quarter}", qdoc, employee, doc["agency"], quarter)
            )
        self._hr_due(employee, year, doc, chosen.policy, batch)

    def _hr_due(
        self, employee: str, year: str, doc: dict[str, Any], policy: Policy, batch: _Batch
    ) -> None:
        rule = policy.hr_decision
        key = f"{employee}/{year}"
        if not doc["final"] or doc["grade"] != rule.failing_grade:
            if self.view.doc("hr_due", key) is not None or ("hr_due", key) in batch.puts:
                batch.put(
                    Put(
                        "hr_due",
                        key,
                        {
                            "employee": employee,
                            "year": year,
                            "open": False,
                            "reason": "no longer failing",
                        },
                        employee,
                        None,
                        year,
                    )
                )
            return
        years = [str(int(year) - i) for i in range(rule.consecutive_failing_years)]
        earlier = self._docs_where("year", batch, employee=employee)
        docs = {y: earlier.get(f"{employee}/{y}") for y in years}
        docs[year] = doc
        if any(
            d is None or not d["final"] or d["grade"] != rule.failing_grade for d in docs.values()
        ):
            return
        raised = parse_instant(doc["final_at"])
        due = policy.hr_decision_due(raised)
        decisions = []
        for h in sorted(self.registry.hr_decisions.values(), key=lambda h: h.proposed_seq):
            if h.employee != employee or h.proposed_at < raised:
                continue
            decisions.append(
                {
                    "decision": h.id,
                    "kind": h.kind,
                    "status": h.status,
                    "seq": h.proposed_seq,
                    "at": _utc(h.proposed_at),
                    # absent resolving_kinds: any kind, unless withdrawn (the rule before it)
                    "resolves": rule.resolves(h.kind, h.status),
                }
            )
        acting = [d for d in decisions if d["resolves"]]
        first = acting[0] if acting else None
        batch.put(
            Put(
                "hr_due",
                key,
                {
                    "employee": employee,
                    "year": year,
                    "years": sorted(years),
                    "grade": rule.failing_grade,
                    "raised_at": doc["final_at"],
                    "raised_by_seq": doc["final_seq"],
                    "due": due.isoformat(),
                    "open": first is None,
                    "resolving_kinds": (
                        list(rule.resolving_kinds) if rule.resolving_kinds is not None else None
                    ),
                    "resolved_by": (
                        {k: first[k] for k in ("decision", "kind", "seq", "at")}
                        if first is not None
                        else None
                    ),
                    "decisions": decisions,
                    "acted_on_by": [d["decision"] for d in acting],
                    "rule": f"hr_decision: {rule.consecutive_failing_years} consecutive"
                    f" years {rule.failing_grade}",
                },
                employee,
                None,
                year,
            )
        )

    def _appeal(self, appellant: str, appeal_id: str, batch: _Batch) -> None:
        appeal = self.registry.appeals.get((appellant, appeal_id))
        if appeal is None:
            return
        day = appeal.filed_at.date()
        posting = self.registry.posting(appellant, day)
        chosen = self.registry.policy_for(posting.unit, day) if posting is not None else None
        due = chosen.policy.appeal_answer_deadline(appeal.filed_at) if chosen is not None else None
        answered_late = (
            appeal.closed_at is not None
            and due is not None
            and appeal.status == "decided"
            and appeal.closed_at >= due
        )
        batch.put(
            Put(
                "appeal",
                f"{appellant}/{appeal_id}",
                {
                    "appellant": appellant,
                    "appeal": appeal_id,
                    "contested": list(appeal.contested),
                    "filed_seq": appeal.filed_seq,
                    "filed_at": appeal.filed_at.isoformat().replace("+00:00", "Z"),
                    "reviewer": appeal.reviewer,
                    "status": appeal.status,
                    "outcome": appeal.outcome,
                    "closed_seq": appeal.closed_seq,
                    "answer_due": due.isoformat() if due is not None else None,
                    "answered_late": answered_late,
                    "open": appeal.status in ("filed", "assigned"),
                },
                appellant,
                self.registry.agency_of(posting.unit) if posting is not None else None,
                None,
            )
        )

    # -- flags -------------------------------------------------------------------------------

    def _flag(
        self,
        batch: _Batch,
        kind: str,
        subject: str,
        seqs: list[int],
        why: str,
        *,
        stable: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Raise a flag with the facts behind it (and the ``extra`` fields of its kind). A
        ``stable`` flag has one key per subject and is withdrawn (``_unflag``) when what
        raised it no longer holds; the others are events (an approval, a late entry): one per
        fact, never withdrawn."""
        employee = subject.split("/")[0]
        period = subject.split("/")[1] if "/" in subject else None
        batch.deletes.pop(("flag", f"{kind}/{subject}"), None)
        batch.put(
            Put(
                "flag",
                f"{kind}/{subject}" if stable else f"{kind}/{subject}/{seqs[-1]}",
                {"kind": kind, "subject": subject, "facts": seqs, "why": why, **(extra or {})},
                employee,
                None,
                period,
            )
        )

    def _hr_decision(self, decision: Any, fact: Fact, batch: _Batch) -> None:
        """An HR decision as it stands, with the facts it rests on: for each period of its
        grounds, the close of the agency the employee was in then."""
        key = decision.id
        previous = batch.puts.get(("hr_decision", key))
        doc = previous.doc if previous is not None else self.view.doc("hr_decision", key)
        acts = list(doc["acts"]) if doc is not None else []
        acts.append({"seq": fact.seq, "type": fact.type, "by": fact.actor, "at": fact.time})
        grounds = []
        for period in decision.grounds:
            posting = self.registry.posting(decision.employee, period_start(period))
            agency = self.registry.agency_of(posting.unit) if posting is not None else None
            close = self.registry.closes.get((agency, period)) if agency is not None else None
            grounds.append(
                {
                    "period": period,
                    "agency": agency,
                    "close_seq": close.seq if close is not None else None,
                    "snapshot": close.snapshot if close is not None else None,
                }
            )
        posting = self.registry.posting(decision.employee, decision.proposed_at.date())
        agency = self.registry.agency_of(posting.unit) if posting is not None else None
        out = {
            "decision": key,
            "employee": decision.employee,
            "kind": decision.kind,
            "status": decision.status,
            "proposed_seq": decision.proposed_seq,
            "grounds": grounds,
            "acts": acts,
        }
        batch.put(Put("hr_decision", key, out, decision.employee, agency, None))

    def _finding(self, fact: Fact, batch: _Batch) -> None:
        """An inspector's finding, as recorded (``domain/inspections.py``)."""
        d = fact.data
        employee = d.get("employee")
        unit = d.get("unit")
        if employee is not None:
            posting = self.registry.posting(employee, parse_instant(fact.time).date())
            unit = posting.unit if posting is not None else None
        agency = self.registry.agency_of(unit) if unit is not None else None
        doc = {
            "finding": d["finding"],
            "employee": employee,
            "unit": d.get("unit"),
            "period": d.get("period"),
            "facts": d.get("facts", []),
            "severity": d["severity"],
            "summary": d["summary"],
            "seq": fact.seq,
            "by": fact.actor,
            "at": fact.time,
        }
        batch.put(Put("finding", d["finding"], doc, employee, agency, d.get("period")))

    def _unflag(self, batch: _Batch, kind: str, subject: str) -> None:
        key = f"{kind}/{subject}"
        if ("flag", key) in batch.puts:
            batch.unput("flag", key)
        batch.deletes[("flag", key)] = None

    def _evidence(self, fact: Fact, key: str, batch: _Batch) -> None:
        """Each evidence hash keeps its claims (``evidence`` view: the first claim of each
        employee period, and who claimed first). A claim of a hash another employee claimed
        raises ``same_evidence`` under **every** claimant's period, citing every claim."""
        employee, period = key.split("/", 1)
        hashes = list(fact.data.get("evidence", ()))
        for h in hashes:
            put = batch.puts.get(("evidence", h))
            first = put.doc if put is not None else batch.evidence.get(h)
            claim = {"employee": employee, "period": period, "seq": fact.seq}
            if first is None:
                doc = {"employee": employee, "seq": fact.seq, "claims": [claim]}
                batch.put(Put("evidence", h, doc, employee))
                continue
            # a document written before claims were kept knows only the first claimant
            claims = first.get("claims") or [
                {"employee": first["employee"], "period": None, "seq": first["seq"]}
            ]
            if all(c["employee"] != employee or c["period"] != period for c in claims):
                doc = {**first, "claims": [*claims, claim]}
                batch.put(Put("evidence", h, doc, first["employee"]))
            if all(c["employee"] == employee for c in claims):
                continue
            cited = [*[c for c in claims if c["seq"] != fact.seq], claim]
            why = f"evidence {h[:12]}… claimed by " + ", ".join(
                f"{c['employee']} (at {c['seq']})" for c in cited
            )
            extra = {"evidence": h, "claims": cited}
            subjects = {f"{c['employee']}/{c['period']}": None for c in cited if c["period"]}
            for subject in subjects:
                self._flag(
                    batch, "same_evidence", subject, [c["seq"] for c in cited], why, extra=extra
                )

    def _late_entry(self, fact: Fact, batch: _Batch) -> None:
        """A late-entry request and its approval (``late_entry`` view, ``agency/request``):
        the positions an ``entry_after_close`` flag cites."""
        d = fact.data
        key = f"{d['agency']}/{d['request']}"
        if fact.type == "period.late_entry_requested":
            doc = {
                "request": d["request"],
                "agency": d["agency"],
                "period": d["period"],
                "employee": d["employee"],
                "requested_seq": fact.seq,
                "requested_by": fact.actor,
                "until": d["until"],
                "approved_seq": None,
                "approved_by": None,
            }
            batch.put(Put("late_entry", key, doc, d["employee"], d["agency"], d["period"]))
            return
        known = self._late_request(key, batch)
        if known is not None:
            doc = {**known, "approved_seq": fact.seq, "approved_by": fact.actor}
            batch.put(Put("late_entry", key, doc, doc["employee"], doc["agency"], doc["period"]))

    def _late_request(self, key: str, batch: _Batch) -> dict[str, Any] | None:
        put = batch.puts.get(("late_entry", key))
        return put.doc if put is not None else self.view.doc("late_entry", key)

    def _after_close(self, fact: Fact, key: str, close: Any, batch: _Batch) -> None:
        """``entry_after_close``: the close and the entry, and the late-entry request that let
        it in (its request and approval), when the entry cites one."""
        period = key.split("/")[1]
        seqs = [close.seq]
        why = f"{fact.type} recorded at {fact.seq} after the close of {period} (at {close.seq})"
        request = None
        code = fact.data.get("late_entry")
        posting = self.registry.posting(key.split("/")[0], period_start(period))
        if isinstance(code, str) and posting is not None:
            agency = self.registry.agency_of(posting.unit)
            found = self._late_request(f"{agency}/{code}", batch)
            if found is not None:
                request = {
                    "request": code,
                    "requested_seq": found["requested_seq"],
                    "approved_seq": found["approved_seq"],
                }
                seqs += [
                    s for s in (found["requested_seq"], found["approved_seq"]) if s is not None
                ]
                approved = found["approved_seq"]
                why += f", under late-entry request {code} (requested at {found['requested_seq']}"
                why += f", approved at {approved})" if approved is not None else ", not approved)"
        seqs.append(fact.seq)
        self._flag(batch, "entry_after_close", key, seqs, why, extra={"late_entry": request})

    def _approval(self, fact: Fact, key: str, batch: _Batch) -> None:
        rules = self._rules(key, batch)
        if rules is None:
            return
        period = key.split("/", 1)[1]
        akey = f"{fact.actor}/{rules.agency}/{period}"
        put = batch.puts.get(("approvals", akey))
        doc = put.doc if put is not None else self.view.doc("approvals", akey)
        if doc is None:
            doc = {"approver": fact.actor, "agency": rules.agency, "period": period, "days": {}}
        day = rules.policy.policy.calendar.local_date(fact.at).isoformat()
        doc["days"].setdefault(day, []).append(fact.seq)  # the batch's own copy
        if put is None:
            batch.put(Put("approvals", akey, doc, fact.actor, rules.agency, period))
        sheet = self._sheets[key]
        item = fact.data["item"]
        declared = [r for r in sheet.items.get(item, []) if r[1] == "work.declared"]
        if declared:
            gap = (fact.at - parse_instant(declared[-1][3])).total_seconds()
            limit = rules.policy.policy.flags.fast_approval_seconds
            if gap < limit:
                self._flag(
                    batch,
                    "fast_approval",
                    key,
                    [declared[-1][0], fact.seq],
                    f"{fact.actor} approved {item} {gap:.0f} s after its declaration"
                    f" (flags.fast_approval_seconds = {limit})",
                )

    def _sheet_flags(self, sheet: Sheet, rules: Rules, batch: _Batch) -> None:
        policy = rules.policy.policy
        self._easiest_items(sheet, rules, batch)
        hours = Fraction(0)
        seqs = []
        for rows in sheet.items.values():
            declared = [
                r for r in rows if r[1] == "work.declared" and r[5].get("hours") is not None
            ]
            if declared:
                hours += Fraction(declared[-1][5]["hours"])
                seqs.append(declared[-1][0])
        if seqs:
            working = len(working_days(policy, sheet.period))
            limit = Fraction(policy.flags.hours_per_working_day) * working
            if hours > limit:
                self._flag(
                    batch,
                    "padded_hours",
                    sheet.key,
                    sorted(seqs),
                    f"{show(hours)} hours declared against {show(limit)} possible"
                    f" ({working} working days × {policy.flags.hours_per_working_day} h)",
                )

    def _easiest_items(self, sheet: Sheet, rules: Rules, batch: _Batch) -> None:
        """Every item of the period is of the lowest standard value the catalogue offers the
        position, though it offers more valuable ones (at least two items: one is no pattern)."""
        catalogue = rules.catalogue
        if catalogue is None or len(sheet.items) < 2:
            return
        unit = "products" if rules.policy.policy.conversion == "products" else "hours"

        def value(code: str) -> Any:
            entry = catalogue.items.get(code)
            return getattr(entry, unit) if entry is not None else None

        offered = [
            v
            for e in catalogue.items.values()
            if (not e.positions or rules.position in e.positions)
            and (v := getattr(e, unit)) is not None
        ]
        if len(set(offered)) < 2:
            return
        lowest = min(offered)
        assigned = [(rows[0][0], rows[0][5].get("code")) for rows in sheet.items.values()]
        if all(value(code) == lowest for _, code in assigned):
            codes = sorted({str(code) for _, code in assigned})
            self._flag(
                batch,
                "easiest_items",
                sheet.key,
                sorted(seq for seq, _ in assigned),
                f"all {len(assigned)} items of {sheet.period} ({', '.join(codes)}) are of the"
                f" lowest value in catalogue v{catalogue.version} ({lowest} standard {unit}),"
                f" of {len(set(offered))} values offered to {rules.position}",
                stable=True,
            )
        else:
            self._unflag(batch, "easiest_items", sheet.key)

    def _outliers(self, period: str, policy: Policy, batch: _Batch) -> None:
        """Agencies whose mean total for ``period`` lies more than ``flags.outlier_z``
        standard errors from the mean of everyone scored in that period (all agencies):
        z = (agency mean − overall mean) / (overall standard deviation / √ agency size)."""
        units = {d["agency"]: d for d in self.view.find("unit", period=period)}
        for put in batch.by_view.get("unit", {}).values():
            if put.period == period:
                units[put.doc["agency"]] = put.doc
        totals = {a: [Fraction(r["total"]) for r in d["results"]] for a, d in units.items()}
        everyone = [t for ts in totals.values() for t in ts]
        if len(totals) < 2 or len(everyone) < 2:
            return
        mean = sum(everyone, Fraction(0)) / len(everyone)
        variance = sum(((t - mean) ** 2 for t in everyone), Fraction(0)) / (len(everyone) - 1)
        if variance == 0:
            return
        limit = Fraction(policy.flags.outlier_z)
        for agency, ts in sorted(totals.items()):
            own = sum(ts, Fraction(0)) / len(ts)
            z_squared = (own - mean) ** 2 * len(ts) / variance  # exact: z² against limit²
            subject = f"{agency}/{period}"
            if z_squared > limit**2:
                z = float(z_squared) ** 0.5 * (1 if own > mean else -1)
                self._flag(
                    batch,
                    "outlier_agency",
                    subject,
                    [int(units[agency]["as_of"])],
                    f"{agency}'s mean total in {period} is {show(own)} against {show(mean)} for"
                    f" all {len(everyone)} people scored: z = {z:.1f}"
                    f" (flags.outlier_z = {policy.flags.outlier_z}; {len(ts)} people)",
                    stable=True,
                )
            else:
                self._unflag(batch, "outlier_agency", subject)

    def _bulk_flags(self, agency: str, period: str, policy: Policy, batch: _Batch) -> None:
        f = policy.flags
        days = working_days(policy, period)
        window = {d.isoformat() for d in days[len(days) - f.bulk_approval_window_days :]}
        if not window:
            return
        docs = self._docs_where("approvals", batch, agency=agency, period=period)
        for doc in docs.values():
            seqs = sorted(s for d, found in doc["days"].items() if d in window for s in found)
            if len(seqs) >= f.bulk_approval_count:
                self._flag(
                    batch,
                    "bulk_approval",
                    f"{doc['approver']}/{period}",
                    seqs,
                    f"{doc['approver']} made {len(seqs)} approvals in {agency} in the last"
                    f" {f.bulk_approval_window_days} working days of {period}"
                    f" (flags.bulk_approval_count = {f.bulk_approval_count})",
                )


_WORKING_DAYS: dict[tuple[str, int, str], list[dt.date]] = {}


def _utc(instant: dt.datetime) -> str:
    return instant.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def hr_due_overdue(doc: dict[str, Any], now: dt.datetime) -> dict[str, Any] | None:
    """Whether an "HR decision due" item was acted on late, or is still open past its
    deadline at ``now``: ``{due, as_of, by_seconds, by_days}`` (``as_of``: the resolving
    decision's time, or ``now`` while open; ``by_days``: whole days), or None when it is
    not (or no longer) due. The view cannot say it (the log has no "now"): readers ask."""
    if "due" not in doc:
        return None
    due = dt.datetime.fromisoformat(doc["due"])
    resolved = doc.get("resolved_by")
    as_of = parse_instant(resolved["at"]) if resolved is not None else now
    late = as_of - due
    if late < dt.timedelta(0):
        return None
    return {
        "due": doc["due"],
        "as_of": _utc(as_of),
        "by_seconds": int(late.total_seconds()),
        "by_days": late.days,
    }


def working_days(policy: Policy, period: str) -> list[dt.date]:
    """The working days of ``period`` in the policy's calendar (cached per policy version)."""
    key = (policy.id, policy.version, period)
    found = _WORKING_DAYS.get(key)
    if found is None:
        first, last = policy.period_bounds(period)
        found = [
            first.fromordinal(n)
            for n in range(first.toordinal(), last.toordinal() + 1)
            if policy.calendar.is_working_day(first.fromordinal(n))
        ]
        if len(_WORKING_DAYS) > 4096:
            _WORKING_DAYS.clear()
        _WORKING_DAYS[key] = found
    return found


# -- the views as pure functions ------------------------------------------------------------


def unit_view(
    agency: str, period: str, results: list[dict[str, Any]], policy: Policy, as_of: int
) -> dict[str, Any]:
    """Distribution by grade and the quota: who keeps the rationed grade, who is moved to
    ``demote_to``, per group of the quota's ``per`` keys, ordered by its tie-break."""
    final = {r["employee"]: r["grade"] for r in results}
    # employee -> (their quota check, their rank among its holders: None if not a holder)
    standing: dict[str, tuple[int | None, int | None]] = {}
    checks: list[dict[str, Any]] = []
    q = policy.quota
    if q is not None:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in results:
            key = tuple(
                {
                    "agency": r["agency"],
                    "unit": r["unit"],
                    "task_group": r["task_group"],
                    "position": r["position"],
                }[k]
                for k in q.per
            )
            groups.setdefault(key, []).append(r)
        for key, members in sorted(groups.items()):
            population = [r for r in members if r["grade"] in q.of_grades]
            holders = [r for r in members if r["grade"] == q.grade]
            allowed = q.allowed(len(population), len(holders))
            ranked = sorted(holders, key=_tie_key(q.tie_break))
            kept, moved = ranked[:allowed], ranked[allowed:]
            for r in moved:
                final[r["employee"]] = q.demote_to
            ranks = {r["employee"]: n for n, r in enumerate(ranked, 1)}
            for r in members:
                standing[r["employee"]] = (len(checks), ranks.get(r["employee"]))
            checks.append(
                {
                    "group": dict(zip(q.per, key, strict=True)),
                    "population": len(population),
                    "allowed": allowed,
                    "holders": len(holders),
                    "cut_off": kept[-1]["total"] if moved and kept else None,
                    "kept": [r["employee"] for r in kept],
                    "moved_to_" + q.demote_to: [r["employee"] for r in moved],
                    "reading": q.reading,
                    "rule": f"quota: {q.grade} ≤ {q.max_ratio} × {sorted(q.of_grades)}"
                    f" ({q.rounding}, {q.reading})",
                }
            )
    distribution = {g.code: 0 for g in policy.grades}
    for grade in final.values():
        distribution[grade] = distribution.get(grade, 0) + 1
    totals = [Fraction(r["total"]) for r in results]
    return {
        "agency": agency,
        "period": period,
        "policy": f"{policy.id}@{policy.version}",
        "as_of": as_of,
        "count": len(results),
        "mean": exact(sum(totals, Fraction(0)) / len(totals)),
        "distribution": distribution,
        "quota": checks,
        "results": [
            {
                "employee": r["employee"],
                "total": r["total"],
                "points_grade": r["points_grade"],
                "grade": final[r["employee"]],
                "policy": r["policy"],
                "catalogue": r["catalogue"],
                "quota_check": standing.get(r["employee"], (None, None))[0],
                "rank": standing.get(r["employee"], (None, None))[1],
            }
            for r in results
        ],
    }


def _tie_key(tie_break: Iterable[Any]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    rules = list(tie_break)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        out: list[Any] = []
        for rule in rules:
            if rule.key == "employee_id":
                value: Any = r["employee"]
                out.append(value if rule.order == "asc" else _Desc(value))
            else:
                number = Fraction(r[rule.key])
                out.append(number if rule.order == "asc" else -number)
        return tuple(out)

    return key


class _Desc:
    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def snapshot_document(
    agency: str, period: str, results: list[dict[str, Any]], close_seq: int
) -> dict[str, Any]:
    """What a close publishes: every employee's exact total and final grade (after the quota)
    with the policy and catalogue versions, as the log stood before the close."""
    return {
        "format": 1,
        "agency": agency,
        "period": period,
        "before": close_seq,
        "results": [
            {k: r[k] for k in ("employee", "total", "points_grade", "grade", "policy", "catalogue")}
            for r in sorted(results, key=lambda r: r["employee"])
        ],
    }


def next_close_snapshot(view: _ViewSQL, agency: str, period: str) -> dict[str, Any]:
    """The snapshot document a ``period.closed`` appended next (at the position after the
    head) must hash: the agency's unit view as the views stand (bring them up to the head
    first)."""
    unit = view.doc("unit", f"{agency}/{period}")
    head, _ = view.head()
    return snapshot_document(agency, period, unit["results"] if unit else [], head + 1)


def _excluded(person: Any, period: str, policy: Policy) -> list[int]:
    """Leave facts that exclude ``period`` from the year: leave of an excluded kind covering
    at least half of the period's working days."""
    days = working_days(policy, period)
    out = []
    for leave in person.leaves:
        if leave.kind not in policy.year.excluded_leave:
            continue
        covered = sum(1 for d in days if leave.start <= d <= leave.end)
        if days and 2 * covered >= len(days):
            out.append(leave.seq)
    return out


def _mean_of(
    months: list[dict[str, Any]], person: Any, policy: Policy
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Fraction | None]:
    counted: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for m in months:
        leave = _excluded(person, m["period"], policy)
        (excluded if leave else counted).append(
            {"period": m["period"], "total": m["total"], "agency": m["agency"], "leave": leave}
        )
    if not counted:
        return counted, excluded, None
    return (
        counted,
        excluded,
        sum((Fraction(m["total"]) for m in counted), Fraction(0)) / len(counted),
    )


def year_view(
    employee: str,
    year: str,
    months: list[dict[str, Any]],
    person: Any,
    policy: Policy,
    registry: Registry,
) -> dict[str, Any]:
    """The year: the mean of the months worked (leave months left out), graded, then the
    overrides of the year (discipline with scope "year", conclusions); months from every
    agency the employee worked in (a transfer brings its signed monthly results along)."""
    counted, excluded, mean = _mean_of(months, person, policy)
    first = period_start(f"{year}-01")
    bounds = (first, first.replace(month=12, day=31))
    points = policy.grade_of(mean).code if mean is not None else None
    forced = []
    o = policy.overrides
    if o.discipline is not None and o.discipline.scope == "year":
        forced.extend(discipline_overrides(policy, person.disciplines.values(), bounds))
    for c in person.conclusions:
        if (
            bounds[0] <= c.decided_on <= bounds[1]
            and o.conduct is not None
            and c.kind in o.conduct.kinds
        ):
            forced.append((o.conduct.grade, c.seq, f"conclusion of {c.kind} on {c.decided_on}"))
    grade = points
    if points is not None and forced:
        grade = lowest(policy, [points] + [g for g, _, _ in forced])
    agency = months[-1]["agency"]
    last_period = policy.period_of(bounds[1])
    close = registry.closes.get((agency, last_period))
    return {
        "employee": employee,
        "year": year,
        "period": year,
        "agency": agency,
        "agencies": sorted({m["agency"] for m in months}),
        "policy": f"{policy.id}@{policy.version}",
        "months": counted,
        "excluded": excluded,
        "mean": exact(mean) if mean is not None else None,
        "shown": show(mean) if mean is not None else None,
        "points_grade": points,
        "grade": grade,
        "overrides": [{"grade": g, "seq": s, "why": w} for g, s, w in forced],
        "final": close is not None,
        "final_seq": close.seq if close is not None else None,
        "final_at": close.at.isoformat().replace("+00:00", "Z") if close is not None else None,
    }


def quarter_views(
    employee: str, months: list[dict[str, Any]], person: Any, policy: Policy
) -> dict[str, dict[str, Any]]:
    """Quarters of a monthly policy: the mean of the quarter's months worked."""
    if policy.period != "month":
        return {}
    quarters: dict[str, list[dict[str, Any]]] = {}
    for m in months:
        y, mm = m["period"].split("-")
        quarters.setdefault(f"{y}-Q{(int(mm) - 1) // 3 + 1}", []).append(m)
    out = {}
    for quarter, members in quarters.items():
        counted, excluded, mean = _mean_of(members, person, policy)
        out[quarter] = {
            "employee": employee,
            "period": quarter,
            "months": counted,
            "excluded": excluded,
            "mean": exact(mean) if mean is not None else None,
            "points_grade": policy.grade_of(mean).code if mean is not None else None,
        }
    return out
