"""The score of one employee's period: a pure function of its facts and the rules.

``compute(sheet, rules)`` takes the sheet (every fact of the period that moves the score,
``projections/sheet.py``) and the rules it is judged by (``Rules``: the policy version, the
catalogue version, the person's conduct record) and returns a ``Result``: the components
(quantity Q, quality C, progress P, early finish E, satisfaction S, task points, general
criteria, adjustments), the total, the grade earned by the points, the grade after
overrides, and the **trace**: one line per fact that moved the result, with its log position,
its effect and the rule that applied, then the arithmetic.

Arithmetic is exact (``Fraction``); two decimals appear only in the text shown to people;
grades are decided on the exact value, so 89.9167 is "good", never rounded up to 90.
Nothing here reads a database: the same function serves the projection runner, as-of replay
and what-if (the same sheet under another policy). ``docs/scoring.md`` works scenario 1 by
hand with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Any

from domain.policy import Policy
from projections.facts import Fact
from projections.registry import CatalogueVersion, Conclusion, Discipline, PolicyVersion
from projections.sheet import Sheet

ZERO = Fraction(0)
HUNDRED = Fraction(100)


def show(value: Fraction | Decimal | int, places: int = 2) -> str:
    """A number as shown to people: ``places`` decimals, half away from zero (display only)."""
    return _show(value if isinstance(value, Fraction) else Fraction(value), places)


@lru_cache(maxsize=8192)
def _show(exact: Fraction, places: int) -> str:
    scaled = abs(exact) * 10**places
    whole = scaled.numerator // scaled.denominator
    if scaled - whole >= Fraction(1, 2):
        whole += 1
    sign = "-" if exact < 0 and whole else ""
    text = str(whole).rjust(places + 1, "0")
    return f"{sign}{text[:-places]}.{text[-places:]}" if places else f"{sign}{text}"


@lru_cache(maxsize=4096)
def number(value: str | Decimal | int) -> Fraction:
    """A number from a fact or a rule pack (a decimal string, a ``Decimal``) as a fraction;
    cached, since the same few quantities and hours recur across thousands of items."""
    return Fraction(Decimal(value) if isinstance(value, str) else value)


def exact(value: Fraction) -> str:
    """A fraction as an exact string: ``"1079/12"`` or ``"93.5625"`` when it is a finite
    decimal, so that a hash over results never depends on rounding."""
    value = value if isinstance(value, Fraction) else Fraction(value)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = value * 10**places
    text = str(abs(scaled.numerator)).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{text[:-places]}.{text[-places:]}" if places else f"{sign}{text}"


@dataclass(frozen=True)
class Line:
    """One line of a trace: the fact at log position ``seq`` (None for arithmetic) had
    ``effect`` under ``rule``."""

    seq: int | None
    fact: str
    subject: str
    effect: str
    rule: str

    def to_doc(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "fact": self.fact,
            "subject": self.subject,
            "effect": self.effect,
            "rule": self.rule,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Line:
        return cls(doc["seq"], doc["fact"], doc["subject"], doc["effect"], doc["rule"])


@dataclass(frozen=True)
class StaffResult:
    """A staff member's result as a leader's factor reads it: the grade (after period
    overrides, before the quota), the total, the last log position among the facts it
    depends on, and the positions of the appeal rulings applied to its facts."""

    employee: str
    grade: str
    total: Fraction
    as_of: int
    rulings: tuple[int, ...] = ()

    @classmethod
    def of(cls, result: Result) -> StaffResult:
        return cls(result.employee, result.grade, result.total, result.as_of, result.rulings)

    @classmethod
    def of_doc(cls, doc: dict[str, Any]) -> StaffResult:
        """From a score document (``Result.to_doc``)."""
        return cls(
            doc["employee"],
            doc["grade"],
            Fraction(doc["total"]),
            int(doc["as_of"]),
            tuple(doc.get("rulings", ())),
        )


@dataclass(frozen=True)
class Rules:
    """What a period is judged by: the policy version (and the log position where it was
    published), the catalogue version in force on the period's first day, whether the
    position is a leader's, the person's discipline and conclusions, and (for a leader)
    the results of their unit's staff; ``posting_seq`` is the position of the posting that
    placed them (a later, back-dated posting would change it)."""

    policy: PolicyVersion
    catalogue: CatalogueVersion | None
    unit: str = ""
    agency: str = ""
    position: str = ""
    leader: bool = False
    disciplines: tuple[Discipline, ...] = ()
    conclusions: tuple[Conclusion, ...] = ()
    subordinates: tuple[StaffResult, ...] | None = None  # for a leader
    posting_seq: int = -1


@dataclass(frozen=True)
class Result:
    employee: str
    period: str
    agency: str
    unit: str
    position: str
    policy: str  # id@version
    policy_seq: int
    catalogue: int | None
    catalogue_seq: int | None
    assigned: Fraction
    done: Fraction
    Q: Fraction
    C: Fraction
    P: Fraction
    E: Fraction
    S: Fraction
    task: Fraction
    general: Fraction
    total: Fraction
    points_grade: str
    grade: str
    overrides: tuple[str, ...]
    task_group: str
    as_of: int  # the last log position among every fact the result depends on (-1: none)
    trace: tuple[Line, ...] = field(compare=False)
    rulings: tuple[int, ...] = ()  # positions of the appeal rulings applied to its facts

    def to_doc(self, *, trace: bool = True) -> dict[str, Any]:
        """The result as JSON (exact numbers as strings); ``trace=False`` leaves the trace
        out (the projection keeps it in a view of its own)."""
        doc: dict[str, Any] = {
            "employee": self.employee,
            "period": self.period,
            "agency": self.agency,
            "unit": self.unit,
            "position": self.position,
            "policy": self.policy,
            "policy_seq": self.policy_seq,
            "catalogue": self.catalogue,
            "catalogue_seq": self.catalogue_seq,
            "points_grade": self.points_grade,
            "grade": self.grade,
            "overrides": list(self.overrides),
            "task_group": self.task_group,
            "as_of": self.as_of,
            "rulings": list(self.rulings),
        }
        for name in ("assigned", "done", "Q", "C", "P", "E", "S", "task", "general", "total"):
            doc[name] = exact(getattr(self, name))
        if trace:
            doc["trace"] = [line.to_doc() for line in self.trace]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], trace: list[dict[str, Any]] | None = None) -> Result:
        """A result read back from ``to_doc``; ``trace`` when the document has none."""
        fractions = {
            name: Fraction(doc[name])
            for name in ("assigned", "done", "Q", "C", "P", "E", "S", "task", "general", "total")
        }
        return cls(
            employee=doc["employee"],
            period=doc["period"],
            agency=doc["agency"],
            unit=doc["unit"],
            position=doc["position"],
            policy=doc["policy"],
            policy_seq=doc["policy_seq"],
            catalogue=doc["catalogue"],
            catalogue_seq=doc["catalogue_seq"],
            points_grade=doc["points_grade"],
            grade=doc["grade"],
            overrides=tuple(doc["overrides"]),
            task_group=doc["task_group"],
            as_of=doc["as_of"],
            trace=tuple(Line.from_doc(x) for x in (doc["trace"] if trace is None else trace)),
            rulings=tuple(doc.get("rulings", ())),
            **fractions,
        )


# -- one item ------------------------------------------------------------------------------


@dataclass
class _Item:
    code: str
    weight: Fraction
    counts: bool
    quality: Fraction
    progress: Fraction
    early: bool
    group: str


def _ruled(facts: Sequence[Fact]) -> tuple[dict[str, Fact], dict[str, Fact]]:
    """Acts overturned and acts exempted by appeal rulings, by nonce -> the ruling fact."""
    overturned: dict[str, Fact] = {}
    exempted: dict[str, Fact] = {}
    for f in facts:
        if f.type.endswith(".ruling_applied"):
            target = overturned if f.data["ruling"] == "overturned" else exempted
            target[f.data["act_nonce"]] = f
    return overturned, exempted


def _item(
    item: str, facts: Sequence[Fact], policy: Policy, catalogue: CatalogueVersion | None
) -> tuple[_Item, list[Line]]:
    lines: list[Line] = []
    assigned = facts[0]
    code = assigned.data["code"]
    quantity = number(assigned.data.get("quantity", "1"))
    entry = catalogue.items.get(code) if catalogue is not None else None
    unit_name = "standard products" if policy.conversion == "products" else "standard hours"
    value = None
    if entry is not None:
        value = entry.products if policy.conversion == "products" else entry.hours
    version = f"catalogue v{catalogue.version}" if catalogue is not None else "no catalogue"
    if value is None:
        weight = ZERO
        lines.append(
            Line(
                assigned.seq,
                assigned.type,
                item,
                f"assigned {show(quantity)} × {code}: {version} gives it no {unit_name}, so it"
                " weighs 0",
                f"task.conversion = {policy.conversion}",
            )
        )
    else:
        weight = quantity * number(value)
        lines.append(
            Line(
                assigned.seq,
                assigned.type,
                item,
                f"assigned {show(quantity)} × {code} ({version}: {value} {unit_name} each)"
                f" = {show(weight)} to do",
                f"task.conversion = {policy.conversion}",
            )
        )
    overturned, exempted = _ruled(facts)
    d = policy.deductions
    covers: set[str] = set()
    verdict: Fact | None = None
    verdict_rejected_overturned = False
    declaration: Fact | None = None
    failures: list[Fact] = []
    delays: list[Fact] = []
    voids: list[Fact] = []
    for f in facts[1:]:
        t = f.type
        if t == "work.declared":
            declaration = f
        elif t in ("work.approved", "work.rejected"):
            verdict = f
            verdict_rejected_overturned = t == "work.rejected" and f.nonce in overturned
        elif t == "work.quality_failed":
            if f.data.get("severity") == "major":
                failures.append(f)
            else:
                lines.append(Line(f.seq, t, item, "minor quality failure: no deduction", ""))
        elif t == "work.delayed":
            delays.append(f)
        elif t == "work.exemption_granted":
            covers.update(f.data["covers"])
            lines.append(
                Line(
                    f.seq,
                    t,
                    item,
                    f"objective-cause exemption covering {' and '.join(f.data['covers'])}",
                    f"task.exemption_waives = {sorted(d.exemption_waives)}",
                )
            )
        elif t == "work.spot_checked" and f.data.get("result") == "not_confirmed":
            voids.append(f)
        elif t == "work.ruling_applied":
            lines.append(
                Line(
                    f.seq,
                    t,
                    item,
                    f"appeal {f.data['appeal']} {f.data['ruling']} the {f.data['act_type']}"
                    f" at {f.data['act']}",
                    "appeal ruling (compensating fact)",
                )
            )
        # later rulings may still change what came before: judged below
    # the verdict in force
    approved = verdict is not None and (
        verdict.type == "work.approved" or verdict_rejected_overturned
    )
    if verdict is None:
        status = "declared, awaiting a verdict" if declaration is not None else "not declared"
        lines.append(
            Line(None, "", item, f"not completed ({status})", "task: Q counts approved work")
        )
    elif verdict.type == "work.rejected" and not approved:
        reason = verdict.data.get("reason", "")
        lines.append(
            Line(
                verdict.seq,
                verdict.type,
                item,
                f"rejected ({reason}): not completed" if reason else "rejected: not completed",
                "task: Q counts approved work",
            )
        )
    elif verdict.type == "work.rejected":
        ruling = overturned[verdict.nonce]
        lines.append(
            Line(
                verdict.seq,
                verdict.type,
                item,
                f"rejection overturned by appeal {ruling.data['appeal']} (at {ruling.seq}):"
                f" completed, +{show(weight)}",
                "task: Q counts approved work",
            )
        )
    else:
        lines.append(
            Line(
                verdict.seq,
                verdict.type,
                item,
                f"approved: completed, +{show(weight)}",
                "task: Q counts approved work",
            )
        )
    voided = False
    if approved and policy.spot_check_not_confirmed == "void":
        for f in voids:
            if f.nonce in overturned:
                lines.append(
                    Line(f.seq, f.type, item, "spot check not confirmed, overturned on appeal", "")
                )
                continue
            voided = True
            lines.append(
                Line(
                    f.seq,
                    f.type,
                    item,
                    "spot check not confirmed: the approval no longer counts",
                    "task.spot_check_not_confirmed = void",
                )
            )
    elif approved:
        for f in voids:
            lines.append(
                Line(
                    f.seq,
                    f.type,
                    item,
                    "spot check not confirmed: counted, flagged",
                    "task.spot_check_not_confirmed = flag",
                )
            )
    counts = approved and not voided

    def deductions(
        acts: list[Fact], waiver: str, cover: str, share: Decimal, what: str, rule: str
    ) -> int:
        n = 0
        for f in acts:
            if f.nonce in overturned:
                appeal = overturned[f.nonce].data["appeal"]
                effect = f"{what} overturned by appeal {appeal}: no deduction"
            elif waiver in d.exemption_waives and f.nonce in exempted:
                effect = (
                    f"{what} exempted by appeal {exempted[f.nonce].data['appeal']}: no deduction"
                )
            elif waiver in d.exemption_waives and cover in covers:
                effect = f"{what} waived by the exemption: no deduction"
            elif not counts:
                effect = f"{what}: no effect (the item is not completed)"
            else:
                n += 1
                effect = f"{what}: −{share} × {show(weight)} {cover}"
            lines.append(Line(f.seq, f.type, item, effect, rule))
        return n

    n_fail = deductions(
        failures,
        "quality_failure",
        "quality",
        d.quality_failure,
        "major quality failure",
        f"task.quality_failure_deduction = {d.quality_failure}",
    )
    n_delay = deductions(
        delays, "delay", "progress", d.delay, "delay", f"task.delay_deduction = {d.delay}"
    )
    quality = progress = ZERO
    early = False
    if counts:
        quality = weight * max(ZERO, 1 - n_fail * number(d.quality_failure)) if n_fail else weight
        progress = weight * max(ZERO, 1 - n_delay * number(d.delay)) if n_delay else weight
        hours = declaration.data.get("hours") if declaration is not None else None
        standard = entry.hours if entry is not None else None
        if (
            declaration is not None
            and hours is not None
            and standard is not None
            and n_fail == 0
            and number(hours) < quantity * number(standard)
        ):
            early = True
            bonus = number(policy.early_finish_bonus)
            if bonus:
                quality += weight * bonus
            lines.append(
                Line(
                    declaration.seq,
                    declaration.type,
                    item,
                    f"finished in {hours} h of {show(quantity * number(standard))} standard"
                    f" hours: early (E)"
                    + (f", quality +{policy.early_finish_bonus} × {show(weight)}" if bonus else ""),
                    f"task.early_finish_bonus = {policy.early_finish_bonus}",
                )
            )
    group = entry.group if entry is not None else ""
    return _Item(code, weight, counts, quality, progress, early, group), lines


# -- the period ----------------------------------------------------------------------------


def _general(facts: Sequence[Fact], policy: Policy) -> tuple[Fraction, Fraction, list[Line]]:
    """The general criteria (latest supervisor assessment plus adjustments that count) and
    the adjustments to the task points."""
    lines: list[Line] = []
    overturned, _ = _ruled(facts)
    assessments = [f for f in facts if f.type == "assessment.supervisor_assessed"]
    general = ZERO
    names = ", ".join(c.code for c in policy.criteria)
    rule = f"general_criteria ({names}; at most {policy.general_max} together)"
    for f in assessments[:-1]:
        lines.append(
            Line(f.seq, f.type, "general", "supervisor assessment, replaced by a later one", rule)
        )
    if assessments:
        last = assessments[-1]
        scores = {k: Decimal(v) for k, v in last.data["scores"].items()}
        general = sum((Fraction(v) for v in scores.values()), ZERO)
        parts = ", ".join(f"{k} {v}" for k, v in scores.items())
        lines.append(
            Line(
                last.seq, last.type, "general", f"general criteria {show(general)} ({parts})", rule
            )
        )
    else:
        lines.append(
            Line(None, "", "general", "no supervisor assessment: general criteria 0", rule)
        )
    for f in facts:
        if f.type == "assessment.self_assessed":
            lines.append(
                Line(
                    f.seq, f.type, "general", "self-assessment: for reference, does not count", rule
                )
            )
    proposals = {f.data["adjustment"]: f for f in facts if f.type == "score.adjustment_proposed"}
    task_delta = ZERO
    for f in facts:
        if f.type == "score.adjustment_declined":
            lines.append(
                Line(f.seq, f.type, f.data["adjustment"], "adjustment declined: does not count", "")
            )
        if f.type != "score.adjustment_approved":
            continue
        proposal = proposals.get(f.data["adjustment"])
        if proposal is None:
            continue
        criterion = proposal.data["criterion"]
        delta = Fraction(Decimal(proposal.data["delta"]))
        rule = f"adjustments.max_abs = {policy.adjustment_max_abs}"
        sign = "+" if delta >= 0 else ""
        what = (
            f"adjustment {f.data['adjustment']} ({sign}{show(delta)} on {criterion},"
            f" proposed at {proposal.seq} by {proposal.actor}, approved by {f.actor})"
        )
        if f.nonce in overturned:
            lines.append(
                Line(
                    f.seq,
                    f.type,
                    criterion,
                    f"{what}: overturned by appeal {overturned[f.nonce].data['appeal']},"
                    " does not count",
                    rule,
                )
            )
            continue
        if criterion == "task":
            task_delta += delta
        else:
            general += delta
        lines.append(Line(f.seq, f.type, criterion, what, rule))
    return general, task_delta, lines


def _satisfaction(facts: Sequence[Fact], policy: Policy) -> tuple[Fraction | None, list[Line]]:
    if not facts:
        return None, []
    weighted = sum(
        (Fraction(Decimal(f.data["score"])) * int(f.data["responses"]) for f in facts), ZERO
    )
    responses = sum(int(f.data["responses"]) for f in facts)
    value = weighted / responses
    lines = [
        Line(
            f.seq,
            f.type,
            f.data["rating"],
            f"citizen satisfaction {f.data['score']} ({f.data['responses']} responses)",
            "S: mean weighted by responses",
        )
        for f in facts
    ]
    return value, lines


def _in(day: dt.date, bounds: tuple[dt.date, dt.date]) -> bool:
    return bounds[0] <= day <= bounds[1]


def period_overrides(rules: Rules, bounds: tuple[dt.date, dt.date]) -> list[tuple[str, int, str]]:
    """(grade, seq, why) forced on the period by conduct recorded within it."""
    policy = rules.policy.policy
    out: list[tuple[str, int, str]] = []
    o = policy.overrides
    for c in rules.conclusions:
        if not _in(c.decided_on, bounds):
            continue
        if o.conduct is not None and c.kind in o.conduct.kinds:
            out.append((o.conduct.grade, c.seq, f"conclusion of {c.kind} on {c.decided_on}"))
        if c.kind == "corruption_in_unit" and rules.leader and o.leader_unit_corruption:
            out.append(
                (
                    o.leader_unit_corruption.grade,
                    c.seq,
                    f"corruption handled in the leader's unit ({c.decided_on})",
                )
            )
    if o.discipline is not None and o.discipline.scope == "period":
        out.extend(discipline_overrides(policy, rules.disciplines, bounds))
    return out


def discipline_overrides(
    policy: Policy, disciplines: Iterable[Discipline], bounds: tuple[dt.date, dt.date]
) -> list[tuple[str, int, str]]:
    rule = policy.overrides.discipline
    if rule is None:
        return []
    out = []
    for disc in disciplines:
        if disc.annulled_seq is not None or not _in(disc.decided_on, bounds):
            continue
        if disc.level in rule.levels and rule.applies(disc.level):
            out.append(
                (rule.grade, disc.seq, f"discipline {disc.id} ({disc.level}) on {disc.decided_on}")
            )
    return out


def lowest(policy: Policy, grades: Iterable[str]) -> str:
    order = [g.code for g in policy.grades]
    return max(grades, key=order.index)


#: item results by (policy position, catalogue position, item, positions of its facts): an
#: item's result and trace lines depend on nothing else, so a caller that scores the same
#: period again (the projection, as a period fills up) can pass one in ``compute(items=)``
ItemCache = MutableMapping[tuple[Any, ...], "tuple[_Item, list[Line]]"]


def compute(sheet: Sheet, rules: Rules, *, items: ItemCache | None = None) -> Result:
    """Score ``sheet`` under ``rules`` (``items``: see ``ItemCache``; only for rules read
    from the log, whose positions identify them)."""
    policy = rules.policy.policy
    bounds = policy.period_bounds(sheet.period)
    catalogue = rules.catalogue
    lines: list[Line] = [
        Line(
            rules.policy.seq,
            "policy.published",
            "rules",
            f"policy {policy.id}@{policy.version} in force for {rules.unit or 'the unit'} on"
            f" {bounds[0]}"
            + (
                f"; {rules.agency} catalogue v{catalogue.version} (published at {catalogue.seq})"
                if catalogue is not None
                else "; no catalogue in force"
            ),
            "a period is scored under the policy and catalogue in force on its first day",
        )
    ]
    assigned = done = quality = progress = early = ZERO
    groups: dict[str, Fraction] = {}
    ordered = sorted(sheet.items.items(), key=lambda kv: kv[1][0][0])
    for item, rows in ordered:
        found = None
        if items is not None:
            where = catalogue.seq if catalogue is not None else None
            key = (rules.policy.seq, where, item, tuple(r[0] for r in rows))
            found = items.get(key)
        if found is None:
            found = _item(item, [Fact.from_compact("", r) for r in rows], policy, catalogue)
            if items is not None:
                items[key] = found
        result, item_lines = found
        lines.extend(item_lines)
        assigned += result.weight
        groups[result.group] = groups.get(result.group, ZERO) + result.weight
        if result.counts:
            done += result.weight
            quality += result.quality
            progress += result.progress
            if result.early:
                early += result.weight
    if assigned:
        q, c, p, e = (HUNDRED * x / assigned for x in (done, quality, progress, early))
    else:
        q = c = p = e = ZERO
        lines.append(Line(None, "", "task", "no work assigned: Q, C, P and E are 0", "task"))
    rating_facts = [Fact.from_compact("", r) for r in sheet.ratings]
    s, s_lines = _satisfaction(rating_facts, policy)
    lines.extend(s_lines)
    values = policy.formula_values(Q=q, C=c, P=p, E=e, S=s)
    task = policy.task_points(values) if assigned else ZERO
    lines.append(
        Line(
            None,
            "",
            "task",
            f"Q = {show(q)}%, C = {show(c)}%, P = {show(p)}%, E = {show(e)}%,"
            f" S = {show(values['S'])}%: T = {policy.task_formula} = {show(task, 4)}",
            "task.formula",
        )
    )
    assessment = [Fact.from_compact("", r) for r in sheet.assessment]
    general, task_delta, g_lines = _general(assessment, policy)
    lines.extend(g_lines)
    task += task_delta
    depends = [sheet.last_seq, rules.policy.seq, rules.posting_seq]
    if catalogue is not None:
        depends.append(catalogue.seq)
    if rules.leader and policy.leader_unit is not None and rules.subordinates is not None:
        lu = policy.leader_unit
        floor = policy.grade(lu.min_grade).min
        staff = sorted(rules.subordinates, key=lambda x: x.employee)
        below = [x.employee for x in staff if policy.grade(x.grade).min < floor]
        for x in staff:  # the evidence: each staff result the factor read
            ruled = (
                f"; appeal rulings applied at {', '.join(str(r) for r in x.rulings)}"
                if x.rulings
                else ""
            )
            meets = "below" if x.employee in below else "at least"
            lines.append(
                Line(
                    x.as_of if x.as_of >= 0 else None,
                    "",
                    x.employee,
                    f"staff result {x.employee} {sheet.period}: {x.grade} (total"
                    f" {show(x.total, 4)}), from the facts up to position {x.as_of}{ruled}:"
                    f" {meets} {lu.min_grade}",
                    f"leader_unit.min_grade = {lu.min_grade}",
                )
            )
            depends.append(x.as_of)
        factor = Fraction(lu.met if not below else lu.otherwise)
        what = (
            f"every one of {len(staff)} staff at least {lu.min_grade}"
            if not below
            else f"{', '.join(below)} below {lu.min_grade}"
        )
        if lu.applies_to == "task":
            task *= factor
        else:
            general *= factor
            task *= factor
        lines.append(
            Line(
                None,
                "",
                "leader",
                f"leader's unit: {what}: {lu.applies_to} × {lu.met if not below else lu.otherwise}",
                "leader_unit",
            )
        )
    total = task + general
    points = policy.grade_of(total).code
    lines.append(
        Line(
            None,
            "",
            "total",
            f"total {show(task, 4)} + {show(general, 4)} = {show(total, 4)}: {points}"
            f" (exact {exact(total)})",
            "grades: " + ", ".join(f"{g.code} ≥ {g.min}" for g in policy.grades),
        )
    )
    forced = period_overrides(rules, bounds)
    depends.extend(seq for _, seq, _ in forced)
    for disc in rules.disciplines:  # an annulment inside the period lifts an override
        if _in(disc.decided_on, bounds) and disc.annulled_seq is not None:
            depends.append(disc.annulled_seq)
    grade = points
    for forced_grade, seq, why in forced:
        lines.append(Line(seq, "", "grade", f"{why}: grade forced to {forced_grade}", "overrides"))
    if forced:
        grade = lowest(policy, [points] + [g for g, _, _ in forced])
    task_group = max(sorted(groups), key=lambda g: groups[g]) if groups else ""
    return Result(
        employee=sheet.employee,
        period=sheet.period,
        agency=rules.agency,
        unit=rules.unit,
        position=rules.position,
        policy=f"{policy.id}@{policy.version}",
        policy_seq=rules.policy.seq,
        catalogue=catalogue.version if catalogue is not None else None,
        catalogue_seq=catalogue.seq if catalogue is not None else None,
        assigned=assigned,
        done=done,
        Q=q,
        C=c,
        P=p,
        E=e,
        S=values["S"],
        task=task,
        general=general,
        total=total,
        points_grade=points,
        grade=grade,
        overrides=tuple(why for _, _, why in forced),
        task_group=task_group,
        as_of=max(depends),
        trace=tuple(lines),
        rulings=_rulings(sheet),
    )


def _rulings(sheet: Sheet) -> tuple[int, ...]:
    """Positions of the appeal rulings (``*.ruling_applied``) among the sheet's facts."""
    rows = [r for item in sheet.items.values() for r in item] + sheet.assessment
    return tuple(sorted(int(r[0]) for r in rows if str(r[1]).endswith(".ruling_applied")))


def score_of(facts: Iterable[Fact], employee: str, period: str, rules: Rules) -> Result:
    """The pure form: the facts of one employee and period (any order) under ``rules``."""
    sheet = Sheet(employee, period)
    items: dict[str, str] = {}
    for fact in sorted(facts, key=lambda f: f.seq):
        if fact.type == "work.assigned":
            items[fact.stream] = fact.data["item"]
        sheet.apply(fact, items.get(fact.stream))
    return compute(sheet, rules)


# -- differences ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """What separates two results of the same employee and period."""

    changes: tuple[tuple[str, str, str], ...]  # (component, before, after)
    only_before: tuple[Line, ...]
    only_after: tuple[Line, ...]

    def to_doc(self) -> dict[str, Any]:
        return {
            "changes": [{"what": w, "before": b, "after": a} for w, b, a in self.changes],
            "only_before": [x.to_doc() for x in self.only_before],
            "only_after": [x.to_doc() for x in self.only_after],
        }


def _text(value: object) -> str:
    return show(value, 4) if isinstance(value, Fraction) else str(value)


def diff(before: Result, after: Result) -> Difference:
    """The components that differ, and the trace lines (facts with their effect and rule)
    found in one result but not the other: the facts and rules that explain the change."""
    changes = []
    for name in (
        "policy",
        "catalogue",
        "Q",
        "C",
        "P",
        "E",
        "S",
        "task",
        "general",
        "total",
        "points_grade",
        "grade",
    ):
        a, b = getattr(before, name), getattr(after, name)
        if a != b:
            changes.append((name, _text(a), _text(b)))
    kept = set(before.trace) & set(after.trace)
    return Difference(
        tuple(changes),
        tuple(x for x in before.trace if x not in kept),
        tuple(x for x in after.trace if x not in kept),
    )
