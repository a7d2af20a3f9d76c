"""Policies (rule packs) as data: every weight, threshold, deadline and bound of an evaluation.

A policy is a versioned, effective-dated JSON document, published as a signed fact
(``policy.published``, data ``{"scope": "<unit code>", "document": {...}}``). This module holds
no policy number: ``parse_policy`` validates a document strictly and turns it into a frozen
``Policy`` whose methods do the arithmetic the document describes (periods, deadlines on the
document's calendar, the task formula, grades). ``docs/policies.md`` describes every key.

Numbers in a document follow the ledger's canonical JSON: no floats. A decimal quantity is a
JSON string matching ``^-?[0-9]+(\\.[0-9]+)?$`` (read as ``Decimal``); counts, days and
versions are JSON integers. Every refusal is a ``PolicyError`` naming the path of the offending
value (``document.appeals.filing.days``) and saying what would be accepted.

The task formula is a tiny arithmetic language (``Formula``): decimal literals, the variables of
``FORMULA_VARIABLES``, ``+ - * /``, unary minus, parentheses, ``min(...)`` and ``max(...)``,
evaluated exactly with ``fractions.Fraction``.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, cast

__all__ = [
    "DAY_KINDS",
    "FORMULA_VARIABLES",
    "HR_DECISION_KINDS",
    "QUOTA_READINGS",
    "SHIPPED_POLICIES",
    "SHIPPED_RESOLVING_KINDS",
    "Calendar",
    "ConductOverride",
    "Criterion",
    "Deadline",
    "DeclarationDeadline",
    "Deductions",
    "DisciplineOverride",
    "Flags",
    "Formula",
    "Grade",
    "HrDecisionRule",
    "LeaderCorruptionOverride",
    "LeaderUnitFactor",
    "Overrides",
    "Policy",
    "PolicyError",
    "Quota",
    "TieBreak",
    "YearRule",
    "effective_policy",
    "parse_policy",
    "shipped_policy",
]

DayKind = Literal["calendar", "working"]
PeriodKind = Literal["month", "quarter"]
Conversion = Literal["products", "hours"]
Effect = Literal["void", "flag"]

DAY_KINDS: frozenset[str] = frozenset({"calendar", "working"})
FORMULA_VARIABLES: frozenset[str] = frozenset({"Q", "C", "P", "E", "S", "task_max"})
"""Q, C, P: quantity, quality, progress (percent, 0-100; C may exceed 100 with an early-finish
bonus); E: percent of approved items finished before their standard time; S: citizen
satisfaction percent (the document's default when no rating exists); task_max."""

SHIPPED_POLICIES: tuple[str, ...] = ("default", "khanh-hoa")
FORMAT = 1  # the document format this module reads (the "format" key), not a policy number

RESERVED_TARGETS: frozenset[str] = frozenset({"general", "task"})
WAIVABLE: frozenset[str] = frozenset({"quality_failure", "delay"})
QUOTA_GROUP_KEYS: frozenset[str] = frozenset({"agency", "unit", "task_group", "position"})
#: how the quota's ratio is counted (``Quota.allowed``)
QUOTA_READINGS = ("population", "before_demotion", "fixed_point")
#: the kinds of HR decision (``domain/hr_decisions.py``); ``hr_decision.resolving_kinds``
#: names those that act on an "HR decision due" item
HR_DECISION_KINDS = ("transfer", "demotion", "dismissal", "reward", "no_action")
#: ``hr_decision.resolving_kinds`` as the shipped packs name it: every measure the item is
#: about, or the explicit decision to take none; never a reward. A document without the key
#: keeps the rule logs were written under before it (``HrDecisionRule.resolving_kinds`` None:
#: any decision kind acts on the item, and only a withdrawal undoes that)
SHIPPED_RESOLVING_KINDS = ("transfer", "demotion", "dismissal", "no_action")
TIE_BREAK_KEYS: frozenset[str] = frozenset(
    {"total", "task", "general", "Q", "C", "P", "E", "S", "employee_id"}
)
UNIQUE_TIE_BREAK_KEY = "employee_id"
WEEKDAYS: tuple[str, ...] = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)

_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_OFFSET_RE = re.compile(r"^([+-])([0-9]{2}):([0-9]{2})$")
_MONTH_RE = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_QUARTER_RE = re.compile(r"^([0-9]{4})-Q([0-9])$")
_MAX_DECIMAL_CHARS = 40  # implementation limits, not policy numbers
_MAX_CODE_CHARS = 64
_MAX_FORMULA_CHARS = 2000
_MAX_FORMULA_DEPTH = 50
_MAX_INT = 2**53 - 1
_MAX_DAYS = 3660  # ten years: a sanity bound on day counts, not a policy number


class PolicyError(ValueError):
    """A policy document (or a question put to a policy) is not acceptable.

    ``path`` names the offending value, e.g. ``document.appeals.filing.days``; ``message`` says
    what is wrong and what would be accepted; ``position`` is the 1-based character position in
    a formula, when the error is in one.
    """

    def __init__(self, message: str, *, path: str = "document", position: int | None = None):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.position = position


# --------------------------------------------------------------------------------------------
# Formula: the task-points formula as data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Num:
    value: Fraction


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Neg:
    operand: _Node


@dataclass(frozen=True)
class _Bin:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Call:
    function: str
    args: tuple[_Node, ...]


_Node = _Num | _Var | _Neg | _Bin | _Call
_FUNCTIONS = frozenset({"min", "max"})
_TOKEN_RE = re.compile(
    r"(?P<space>\s+)|(?P<number>[0-9]+(?:\.[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/(),])"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "number" | "name" | "op" | "end"
    text: str
    position: int  # 1-based


def _tokenize(text: str, path: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        match = _TOKEN_RE.match(text, index)
        if match is None:
            char = text[index]
            hint = " (write decimals as 0.5, not .5)" if char == "." else ""
            raise PolicyError(
                f"unexpected character {char!r} at position {index + 1}{hint}",
                path=path,
                position=index + 1,
            )
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), index + 1))
        index = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over: expr := term (("+"|"-") term)*; term := unary (("*"|"/") unary)*;
    unary := "-" unary | primary; primary := number | name | name "(" expr ("," expr)* ")" |
    "(" expr ")"."""

    def __init__(self, text: str, variables: frozenset[str], path: str) -> None:
        self.tokens = _tokenize(text, path)
        self.index = 0
        self.variables = variables
        self.path = path
        self.used: set[str] = set()
        self.depth = 0

    def error(self, message: str, token: _Token) -> PolicyError:
        return PolicyError(
            f"{message} at position {token.position}", path=self.path, position=token.position
        )

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        token = self.current
        if token.kind != "op" or token.text != text:
            found = "the end of the formula" if token.kind == "end" else repr(token.text)
            raise self.error(f"expected {text!r}, found {found}", token)
        self.index += 1

    def parse(self) -> _Node:
        if self.current.kind == "end":
            raise self.error("the formula is empty", self.current)
        node = self.expr()
        token = self.current
        if token.kind != "end":
            raise self.error(f"expected an operator, found {token.text!r}", token)
        return node

    def expr(self) -> _Node:
        self.depth += 1
        if self.depth > _MAX_FORMULA_DEPTH:
            raise self.error(f"nested deeper than {_MAX_FORMULA_DEPTH} levels", self.current)
        node = self.term()
        while self.current.kind == "op" and self.current.text in "+-":
            op = self.take().text
            node = _Bin(op, node, self.term())
        self.depth -= 1
        return node

    def term(self) -> _Node:
        node = self.unary()
        while self.current.kind == "op" and self.current.text in "*/":
            op = self.take().text
            node = _Bin(op, node, self.unary())
        return node

    def unary(self) -> _Node:
        if self.current.kind == "op" and self.current.text == "-":
            self.take()
            self.depth += 1
            if self.depth > _MAX_FORMULA_DEPTH:
                raise self.error(f"nested deeper than {_MAX_FORMULA_DEPTH} levels", self.current)
            node = _Neg(self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> _Node:
        token = self.take()
        if token.kind == "number":
            return _Num(Fraction(token.text))
        if token.kind == "name":
            if token.text in _FUNCTIONS:
                if not (self.current.kind == "op" and self.current.text == "("):
                    raise self.error(f"{token.text} must be called: {token.text}(a, b)", token)
                self.take()
                args = [self.expr()]
                while self.current.kind == "op" and self.current.text == ",":
                    self.take()
                    args.append(self.expr())
                self.expect(")")
                if len(args) < 2:
                    raise self.error(f"{token.text}() needs at least two arguments", token)
                return _Call(token.text, tuple(args))
            if self.current.kind == "op" and self.current.text == "(":
                raise self.error(f"unknown function {token.text!r} (only min and max exist)", token)
            if token.text not in self.variables:
                known = ", ".join(sorted(self.variables))
                raise self.error(f"unknown variable {token.text!r} (known: {known})", token)
            self.used.add(token.text)
            return _Var(token.text)
        if token.kind == "op" and token.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        found = "the end of the formula" if token.kind == "end" else repr(token.text)
        raise self.error(f"expected a number, a variable or '(', found {found}", token)


def _evaluate(node: _Node, values: Mapping[str, Fraction], path: str) -> Fraction:
    if isinstance(node, _Num):
        return node.value
    if isinstance(node, _Var):
        return values[node.name]
    if isinstance(node, _Neg):
        return -_evaluate(node.operand, values, path)
    if isinstance(node, _Call):
        results = [_evaluate(arg, values, path) for arg in node.args]
        return min(results) if node.function == "min" else max(results)
    left = _evaluate(node.left, values, path)
    right = _evaluate(node.right, values, path)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        raise PolicyError("division by zero", path=path)
    return left / right


@dataclass(frozen=True)
class Formula:
    """A parsed formula: ``text`` as written, ``variables`` it uses (a subset of the allowed)."""

    text: str
    variables: frozenset[str]
    _root: _Node = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, variables: frozenset[str], *, path: str = "formula") -> Formula:
        """Parse ``text``; any variable outside ``variables`` or any syntax error is refused
        with a ``PolicyError`` naming the (1-based) position."""
        if not isinstance(text, str):
            raise PolicyError(f"a formula must be a string, not {_kind(text)}", path=path)
        if len(text) > _MAX_FORMULA_CHARS:
            raise PolicyError(f"longer than {_MAX_FORMULA_CHARS} characters", path=path)
        parser = _Parser(text, frozenset(variables), path)
        root = parser.parse()
        return cls(text, frozenset(parser.used), root)

    def evaluate(self, values: Mapping[str, Fraction]) -> Fraction:
        """Exact value for ``values`` (Fractions; ints and Decimals are accepted, floats not)."""
        exact: dict[str, Fraction] = {}
        for name in self.variables:
            if name not in values:
                raise PolicyError(f"no value given for variable {name!r}", path="formula")
            value: object = values[name]
            if isinstance(value, bool) or not isinstance(value, Fraction | int | Decimal):
                raise PolicyError(
                    f"variable {name!r} must be a Fraction, int or Decimal, not {_kind(value)}",
                    path="formula",
                )
            exact[name] = Fraction(value)
        return _evaluate(self._root, exact, f"formula {self.text!r}")

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# The calendar
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calendar:
    """Working days and the timezone in which "a day" is counted.

    ``weekend`` holds ``date.weekday()`` numbers (0 Monday ... 6 Sunday); ``holidays`` are days
    off; ``extra_working_days`` are weekend days worked instead of a bridged day (a swap).
    """

    weekend: frozenset[int]
    holidays: frozenset[dt.date]
    extra_working_days: frozenset[dt.date]
    tz: dt.timezone

    def __post_init__(self) -> None:
        if not self.weekend <= set(range(7)) or len(self.weekend) >= 7:
            raise PolicyError(
                "the weekend must leave at least one working weekday", path="calendar"
            )

    def is_working_day(self, d: dt.date) -> bool:
        if d in self.holidays:
            return False
        if d in self.extra_working_days:
            return True
        return d.weekday() not in self.weekend

    def add_days(self, start: dt.date, days: int, kind: DayKind) -> dt.date:
        """The day ``days`` days after ``start`` (``start`` itself not counted). For
        ``"working"`` only working days count: 10 working days from a Friday skip weekends
        and holidays."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise PolicyError(f"days must be a non-negative integer, got {days!r}", path="days")
        try:
            if kind == "calendar":
                return start + dt.timedelta(days=days)
            if kind == "working":
                current = start
                remaining = days
                while remaining:
                    current += dt.timedelta(days=1)
                    if self.is_working_day(current):
                        remaining -= 1
                return current
        except OverflowError:
            raise PolicyError(
                f"{days} days after {start} is beyond year 9999", path="days"
            ) from None
        raise PolicyError(f"unknown day kind {kind!r}: use 'calendar' or 'working'", path="kind")

    def next_working_day(self, d: dt.date) -> dt.date:
        """``d`` if it is a working day, else the first working day after it."""
        while not self.is_working_day(d):
            d += dt.timedelta(days=1)
        return d

    def local_date(self, instant: dt.datetime) -> dt.date:
        """The calendar day (in the policy's timezone) of an aware datetime."""
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise PolicyError(
                f"naive datetime {instant.isoformat()} refused: give a timezone", path="time"
            )
        return instant.astimezone(self.tz).date()

    def start_of(self, d: dt.date) -> dt.datetime:
        """Midnight opening ``d`` in the policy's timezone."""
        return dt.datetime(d.year, d.month, d.day, tzinfo=self.tz)


# --------------------------------------------------------------------------------------------
# The parsed pieces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """A general criterion: ``code`` (what adjustments target), English and Vietnamese names."""

    code: str
    name: str
    name_vi: str
    max: Decimal


@dataclass(frozen=True)
class Grade:
    """A classification: a total of at least ``min`` (and below the previous grade's) earns it."""

    code: str
    min: Decimal
    name_vi: str


@dataclass(frozen=True)
class Deadline:
    """``days`` days of ``kind`` counted from the day after the event; the deadline is the end
    of the last allowed day. With ``roll_forward`` a last day that is not a working day moves
    to the next working day (Civil Code 2015, art. 148(5))."""

    days: int
    kind: DayKind
    roll_forward: bool


@dataclass(frozen=True)
class DeclarationDeadline:
    """Declarations for a period are due before day ``before_day`` of the period's last month
    plus ``month_offset`` months; ``late_effect`` "void": a late declaration does not count;
    "flag": it counts and is flagged."""

    before_day: int
    month_offset: int
    late_effect: Effect


@dataclass(frozen=True)
class Deductions:
    """Per failed quality check (major error) / per recorded delay: the fraction of that
    item's quality / progress share taken off (an item's share never goes below zero);
    ``exemption_waives``: which deductions an objective-cause exemption cancels
    ("quality_failure", "delay")."""

    quality_failure: Decimal
    delay: Decimal
    exemption_waives: frozenset[str]


@dataclass(frozen=True)
class ConductOverride:
    """A conclusion of one of ``kinds`` (e.g. political or moral degradation) forces ``grade``."""

    kinds: frozenset[str]
    grade: str


@dataclass(frozen=True)
class DisciplineOverride:
    """Discipline at ``min_level`` or heavier (``levels`` run lightest to heaviest) forces
    ``grade`` for the ``scope`` ("year": the year's classification; "period": the period in
    which the discipline was imposed)."""

    levels: tuple[str, ...]
    min_level: str
    scope: Literal["year", "period"]
    grade: str

    def applies(self, level: str) -> bool:
        if level not in self.levels:
            raise PolicyError(
                f"unknown discipline level {level!r} (known: {', '.join(self.levels)})",
                path="discipline.level",
            )
        return self.levels.index(level) >= self.levels.index(self.min_level)


@dataclass(frozen=True)
class LeaderCorruptionOverride:
    """For a leader, corruption handled in their unit forces ``grade``."""

    grade: str


@dataclass(frozen=True)
class Overrides:
    """Grades forced regardless of points; ``None`` where the policy has no such override."""

    conduct: ConductOverride | None
    discipline: DisciplineOverride | None
    leader_unit_corruption: LeaderCorruptionOverride | None


@dataclass(frozen=True)
class LeaderUnitFactor:
    """A leader's ``applies_to`` points ("task" or "total") are multiplied by ``met`` when
    every subordinate is at least ``min_grade``, else by ``otherwise``."""

    min_grade: str
    met: Decimal
    otherwise: Decimal
    applies_to: Literal["task", "total"]


@dataclass(frozen=True)
class TieBreak:
    key: str
    order: Literal["asc", "desc"]


@dataclass(frozen=True)
class Quota:
    """At most ``max_ratio`` × (number of people whose points earn one of ``of_grades``),
    rounded by ``rounding``, may keep ``grade``, counted per group of ``per`` keys; the others,
    ordered by ``tie_break`` (the last key unique, so replay is deterministic), get
    ``demote_to``."""

    grade: str
    max_ratio: Decimal
    of_grades: frozenset[str]
    per: tuple[str, ...]
    rounding: Literal["floor", "ceil", "half_up"]
    tie_break: tuple[TieBreak, ...]
    demote_to: str
    #: what the ratio is counted against (``QUOTA_READINGS``; absent from a document:
    #: "population", the only reading before the key existed)
    reading: Literal["population", "before_demotion", "fixed_point"] = "population"

    def _rounded(self, exact: Fraction) -> int:
        floor = exact.numerator // exact.denominator
        if self.rounding == "floor" or exact == floor:
            return floor
        if self.rounding == "ceil":
            return floor + 1
        return floor + 1 if exact - floor >= Fraction(1, 2) else floor

    def allowed(self, population: int, holders: int = 0) -> int:
        """How many of a group may keep ``grade`` when ``population`` people have a grade in
        ``of_grades`` and ``holders`` of them (or besides them) hold ``grade``, by the
        reading:

        * ``population``: rounding(max_ratio × population);
        * ``before_demotion``: rounding(max_ratio × those rated in ``of_grades`` before the
          demotion, the holders of ``grade`` left out);
        * ``fixed_point``: the largest k with k ≤ rounding(max_ratio × (population − k)): the
          cap counted against those left in the other grades after the demotion (``grade``
          and ``demote_to`` are then both in ``of_grades``, which the parser checks)."""
        for name, value in (("population", population), ("holders", holders)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(
                    f"{name} must be a non-negative integer, got {value!r}",
                    path=f"quota.{name}",
                )
        ratio = Fraction(self.max_ratio)
        if self.reading == "population":
            return self._rounded(ratio * population)
        if self.reading == "before_demotion":
            rated = population - holders if self.grade in self.of_grades else population
            return self._rounded(ratio * max(rated, 0))
        # k ≤ ratio × (N − k) holds for every k up to the largest, so start from the
        # exact bound ratio × N / (1 + ratio) and step up while rounding lets one more in
        k = self._rounded_down(ratio * population / (1 + ratio))
        while k < population and k + 1 <= self._rounded(ratio * (population - k - 1)):
            k += 1
        return k

    @staticmethod
    def _rounded_down(exact: Fraction) -> int:
        return exact.numerator // exact.denominator


@dataclass(frozen=True)
class YearRule:
    """The year's result is the ``method`` of its periods ("mean_of_months_worked": months
    with leave of an ``excluded_leave`` kind do not count, neither as zero nor at all); ranking
    is due before ``ranking_deadline_month``/``ranking_deadline_day``."""

    method: Literal["mean_of_months_worked"]
    excluded_leave: frozenset[str]
    ranking_deadline_month: int
    ranking_deadline_day: int


@dataclass(frozen=True)
class HrDecisionRule:
    """``consecutive_failing_years`` years graded ``failing_grade`` in a row raise an
    "HR decision due" item, due within ``due``. Never an automatic dismissal."""

    consecutive_failing_years: int
    failing_grade: str
    due: Deadline
    #: the HR decision kinds whose proposal acts on the item, while neither withdrawn nor
    #: overturned. None (the key absent from a document): the rule before the key, under
    #: which logs were written: a decision of any kind acts on it unless withdrawn
    resolving_kinds: tuple[str, ...] | None = None

    def resolves(self, kind: str, status: str) -> bool:
        """Whether an HR decision of ``kind``, now ``status`` (proposed, issued, withdrawn,
        overturned), acts on the item."""
        if self.resolving_kinds is None:
            return status != "withdrawn"
        return kind in self.resolving_kinds and status in ("proposed", "issued")


@dataclass(frozen=True)
class Flags:
    """Thresholds of anti-gaming flags (for people to look at, never automatic penalties)."""

    hours_per_working_day: Decimal
    fast_approval_seconds: int
    bulk_approval_count: int
    bulk_approval_window_days: int
    outlier_z: Decimal


@dataclass(frozen=True)
class Policy:
    """A validated policy document. Build it with ``parse_policy``."""

    id: str
    version: int
    effective_from: dt.date
    name: str
    legal_basis: str
    period: PeriodKind
    general_max: Decimal
    task_max: Decimal
    criteria: tuple[Criterion, ...]
    adjustable: frozenset[str]
    adjustment_max_abs: Decimal
    adjustment_second_approver: bool
    score_places: int
    calendar: Calendar
    conversion: Conversion
    task_formula: Formula
    satisfaction_default: Decimal
    deductions: Deductions
    early_finish_bonus: Decimal
    spot_check_not_confirmed: Effect
    grades: tuple[Grade, ...]
    overrides: Overrides
    leader_unit: LeaderUnitFactor | None
    quota: Quota | None
    year: YearRule
    appeal_filing: Deadline
    appeal_answer: Deadline
    second_review: bool
    declaration: DeclarationDeadline | None
    hr_decision: HrDecisionRule
    flags: Flags
    document: Mapping[str, Any] = field(compare=False, repr=False)

    # -- scores ------------------------------------------------------------------------------

    def criterion_max(self, code: str) -> Decimal:
        """The maximum of a general criterion, of ``"general"`` (the total) or ``"task"``."""
        if code == "general":
            return self.general_max
        if code == "task":
            return self.task_max
        for criterion in self.criteria:
            if criterion.code == code:
                return criterion.max
        known = ", ".join([c.code for c in self.criteria] + ["general", "task"])
        raise PolicyError(f"unknown criterion {code!r} (known: {known})", path="criterion")

    def grade(self, code: str) -> Grade:
        for grade in self.grades:
            if grade.code == code:
                return grade
        known = ", ".join(g.code for g in self.grades)
        raise PolicyError(f"unknown grade {code!r} (known: {known})", path="grade")

    def grade_of(self, points: Fraction | Decimal | int) -> Grade:
        """The grade earned by ``points`` on the exact value (89.917 is below 90: no rounding
        up across a threshold). Below every threshold: the lowest grade."""
        if isinstance(points, bool) or not isinstance(points, Fraction | Decimal | int):
            raise PolicyError(f"points must be exact, not {_kind(points)}", path="points")
        exact = Fraction(points)
        for grade in self.grades:
            if exact >= Fraction(grade.min):
                return grade
        return self.grades[-1]

    def parse_score(self, text: str, *, path: str = "score") -> Decimal:
        """A score or delta given by a person: a decimal string with at most ``score_places``
        decimal places."""
        value = _decimal_text(text, path)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > self.score_places:
            raise PolicyError(
                f"{text!r} has more than {self.score_places} decimal places", path=path
            )
        return value

    def formula_values(
        self,
        *,
        Q: Fraction,
        C: Fraction,
        P: Fraction,
        E: Fraction | None = None,
        S: Fraction | None = None,
    ) -> dict[str, Fraction]:
        """The formula's inputs: E absent counts as 0, S absent as ``satisfaction_default``."""
        return {
            "Q": Fraction(Q),
            "C": Fraction(C),
            "P": Fraction(P),
            "E": Fraction(0) if E is None else Fraction(E),
            "S": Fraction(self.satisfaction_default) if S is None else Fraction(S),
            "task_max": Fraction(self.task_max),
        }

    def task_points(self, values: Mapping[str, Fraction]) -> Fraction:
        """``task_formula`` evaluated on ``values`` (``task_max`` is filled in)."""
        return self.task_formula.evaluate({**values, "task_max": Fraction(self.task_max)})

    # -- periods -----------------------------------------------------------------------------

    def period_of(self, day: dt.date) -> str:
        """The period containing ``day``: ``2026-03`` (month) or ``2026-Q1`` (quarter)."""
        if self.period == "month":
            return f"{day.year:04d}-{day.month:02d}"
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"

    def period_bounds(self, period: str) -> tuple[dt.date, dt.date]:
        """First and last day of ``period``."""
        if not isinstance(period, str):
            raise PolicyError(f"a period must be a string, not {_kind(period)}", path="period")
        if self.period == "month":
            match = _MONTH_RE.match(period)
            if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
                raise PolicyError(
                    f"{period!r} is not a month period of this policy: write YYYY-MM "
                    "(e.g. 2026-03)",
                    path="period",
                )
            year, first_month = int(match.group(1)), int(match.group(2))
            last_month = first_month
        else:
            match = _QUARTER_RE.match(period)
            if match is None or not 1 <= int(match.group(2)) <= 4 or int(match.group(1)) < 1:
                raise PolicyError(
                    f"{period!r} is not a quarter period of this policy: write YYYY-Qn "
                    "(e.g. 2026-Q1)",
                    path="period",
                )
            year, quarter = int(match.group(1)), int(match.group(2))
            first_month, last_month = 3 * quarter - 2, 3 * quarter
        last_day = _calendar.monthrange(year, last_month)[1]
        return dt.date(year, first_month, 1), dt.date(year, last_month, last_day)

    # -- deadlines ---------------------------------------------------------------------------

    def deadline(self, start: dt.datetime, rule: Deadline) -> dt.datetime:
        """The exclusive instant ending ``rule`` counted from ``start``."""
        local = self.calendar.local_date(start)
        last = self.calendar.add_days(local, rule.days, rule.kind)
        if rule.roll_forward:
            last = self.calendar.next_working_day(last)
        return self.calendar.start_of(last + dt.timedelta(days=1))

    def appeal_filing_deadline(self, published_at: dt.datetime) -> dt.datetime:
        """An appeal must be filed strictly before this instant."""
        return self.deadline(published_at, self.appeal_filing)

    def appeal_answer_deadline(self, filed_at: dt.datetime) -> dt.datetime:
        """An appeal must be answered strictly before this instant."""
        return self.deadline(filed_at, self.appeal_answer)

    def hr_decision_due(self, raised_at: dt.datetime) -> dt.datetime:
        """An "HR decision due" item raised at ``raised_at`` must be acted on before this."""
        return self.deadline(raised_at, self.hr_decision.due)

    def declaration_deadline(self, period: str) -> dt.datetime | None:
        """Declarations for ``period`` are late from this instant on; ``None`` if the policy
        sets no declaration deadline."""
        _first, last = self.period_bounds(period)
        if self.declaration is None:
            return None
        months = last.year * 12 + (last.month - 1) + self.declaration.month_offset
        year, month = divmod(months, 12)
        if not 1 <= year <= 9999:
            raise PolicyError(
                f"the declaration deadline of {period} is out of range", path="period"
            )
        return dt.datetime(year, month + 1, self.declaration.before_day, tzinfo=self.calendar.tz)

    def ranking_deadline(self, year: int) -> dt.datetime:
        """The year's ranking must be done before this instant."""
        return dt.datetime(
            year,
            self.year.ranking_deadline_month,
            self.year.ranking_deadline_day,
            tzinfo=self.calendar.tz,
        )

    def as_document(self) -> dict[str, Any]:
        """The document as plain JSON values (dicts and lists), a fresh copy."""
        return cast(dict[str, Any], _thaw(self.document))


def effective_policy(policies: Iterable[Policy], day: dt.date) -> Policy | None:
    """Among the versions published for one scope, in publication order, the one in force on
    ``day``: of those whose ``effective_from`` is on or before ``day``, the one that took effect
    last; of two that took effect on the same day, the later publication. ``None`` if none."""
    best: Policy | None = None
    for policy in policies:
        if policy.effective_from <= day and (
            best is None or policy.effective_from >= best.effective_from
        ):
            best = policy
    return best


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _decimal_text(value: object, path: str) -> Decimal:
    if isinstance(value, float):
        raise PolicyError(
            f'floats are not allowed: write the decimal as a string, e.g. "{value}"', path=path
        )
    if not isinstance(value, str):
        raise PolicyError(f'expected a decimal string like "0.25", found {_kind(value)}', path=path)
    if len(value) > _MAX_DECIMAL_CHARS or not _DECIMAL_RE.match(value):
        raise PolicyError(
            f"{value!r} is not a decimal string (digits, an optional '-' and an optional "
            'fraction part: "30", "0.25", "-1.5")',
            path=path,
        )
    return Decimal(value)


def _check_floats(value: Any, path: str) -> None:
    """Refuse floats anywhere, before any other check, so the message is always the clear one."""
    if isinstance(value, float):
        raise PolicyError(
            f'floats are not allowed in a policy: write {value!r} as the string "{value}" '
            "(a decimal) or as an integer",
            path=path,
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_floats(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_floats(item, f"{path}[{index}]")


class _Obj:
    """A JSON object under validation: exact key set, typed getters that name the path."""

    def __init__(
        self,
        value: object,
        path: str,
        required: Sequence[str],
        optional: Sequence[str] = (),
    ) -> None:
        if not isinstance(value, Mapping):
            raise PolicyError(f"expected an object, found {_kind(value)}", path=path)
        unknown = sorted(str(k) for k in value if k not in required and k not in optional)
        if unknown:
            allowed = ", ".join([*required, *optional])
            raise PolicyError(
                f"unknown key {unknown[0]!r} (allowed: {allowed})", path=f"{path}.{unknown[0]}"
            )
        missing = [k for k in required if k not in value]
        if missing:
            raise PolicyError(f"missing key {missing[0]!r}", path=f"{path}.{missing[0]}")
        self.value: Mapping[str, Any] = value
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str) -> Any:
        return self.value[key]

    def obj(self, key: str, required: Sequence[str], optional: Sequence[str] = ()) -> _Obj:
        return _Obj(self.value[key], self.at(key), required, optional)

    def optional_obj(
        self, key: str, required: Sequence[str], optional: Sequence[str] = ()
    ) -> _Obj | None:
        if self.value[key] is None:
            return None
        return self.obj(key, required, optional)

    def string(self, key: str) -> str:
        value = self.value[key]
        if not isinstance(value, str):
            raise PolicyError(f"expected a string, found {_kind(value)}", path=self.at(key))
        if not value.strip():
            raise PolicyError("must not be empty", path=self.at(key))
        return value

    def code(self, key: str) -> str:
        return _code(self.value[key], self.at(key))

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.value[key]
        if not isinstance(value, str) or value not in choices:
            options = ", ".join(repr(c) for c in choices)
            raise PolicyError(f"must be one of {options}, found {value!r}", path=self.at(key))
        return value

    def boolean(self, key: str) -> bool:
        value = self.value[key]
        if not isinstance(value, bool):
            raise PolicyError(f"expected true or false, found {_kind(value)}", path=self.at(key))
        return value

    def integer(self, key: str, *, low: int, high: int = _MAX_INT) -> int:
        value = self.value[key]
        if isinstance(value, float):
            raise PolicyError(
                f"floats are not allowed: expected an integer, found {value!r}", path=self.at(key)
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(f"expected an integer, found {_kind(value)}", path=self.at(key))
        if not low <= value <= high:
            bound = f"at least {low}" if high == _MAX_INT else f"between {low} and {high}"
            raise PolicyError(f"must be {bound}, found {value}", path=self.at(key))
        return value

    def decimal(
        self,
        key: str,
        *,
        low: Decimal | None = None,
        high: Decimal | None = None,
        positive: bool = False,
    ) -> Decimal:
        value = _decimal_text(self.value[key], self.at(key))
        if positive and value <= 0:
            raise PolicyError(
                f"must be greater than 0, found {self.value[key]!r}", path=self.at(key)
            )
        if low is not None and value < low:
            raise PolicyError(
                f"must be at least {low}, found {self.value[key]!r}", path=self.at(key)
            )
        if high is not None and value > high:
            raise PolicyError(
                f"must be at most {high}, found {self.value[key]!r}", path=self.at(key)
            )
        return value

    def date(self, key: str) -> dt.date:
        return _date(self.value[key], self.at(key))

    def items(self, key: str, *, non_empty: bool = True) -> list[tuple[str, Any]]:
        value = self.value[key]
        if not isinstance(value, list | tuple):
            raise PolicyError(f"expected a list, found {_kind(value)}", path=self.at(key))
        if non_empty and not value:
            raise PolicyError("must not be empty", path=self.at(key))
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value)]

    def codes(self, key: str, *, non_empty: bool = True) -> tuple[str, ...]:
        out: list[str] = []
        for path, item in self.items(key, non_empty=non_empty):
            code = _code(item, path)
            if code in out:
                raise PolicyError(f"{code!r} is listed twice", path=path)
            out.append(code)
        return tuple(out)


def _code(value: object, path: str) -> str:
    if not isinstance(value, str) or not _CODE_RE.match(value) or len(value) > _MAX_CODE_CHARS:
        raise PolicyError(
            f"expected a code (lower-case letters, digits and '_', starting with a letter), "
            f"found {value!r}",
            path=path,
        )
    return value


def _date(value: object, path: str) -> dt.date:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise PolicyError(f"expected a date written YYYY-MM-DD, found {value!r}", path=path)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise PolicyError(f"{value!r} is not a calendar date", path=path) from None


def _deadline(obj: _Obj) -> Deadline:
    return Deadline(
        days=obj.integer("days", low=0, high=_MAX_DAYS),
        kind=cast(DayKind, obj.choice("kind", ("calendar", "working"))),
        roll_forward=obj.boolean("roll_forward"),
    )


def _grade_ref(obj: _Obj, key: str, grades: Sequence[str]) -> str:
    value = obj.raw(key)
    if value not in grades:
        raise PolicyError(
            f"unknown grade {value!r} (the policy's grades: {', '.join(grades)})", path=obj.at(key)
        )
    return cast(str, value)


def _timezone(value: object, path: str) -> dt.timezone:
    match = _OFFSET_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise PolicyError(f'expected an offset like "+07:00", found {value!r}', path=path)
    hours, minutes = int(match.group(2)), int(match.group(3))
    if hours > 23 or minutes > 59:
        raise PolicyError(f"{value!r} is not a valid UTC offset", path=path)
    sign = -1 if match.group(1) == "-" else 1
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _calendar_of(obj: _Obj, tz: dt.timezone) -> Calendar:
    weekend: set[int] = set()
    for path, item in obj.items("weekend", non_empty=False):
        if item not in WEEKDAYS:
            raise PolicyError(
                f"expected a weekday name ({', '.join(WEEKDAYS)}), found {item!r}", path=path
            )
        if WEEKDAYS.index(item) in weekend:
            raise PolicyError(f"{item!r} is listed twice", path=path)
        weekend.add(WEEKDAYS.index(item))
    if len(weekend) == len(WEEKDAYS):
        raise PolicyError(
            "the weekend must leave at least one working weekday", path=obj.at("weekend")
        )
    days: dict[str, set[dt.date]] = {}
    for key in ("holidays", "extra_working_days"):
        seen: set[dt.date] = set()
        for path, item in obj.items(key, non_empty=False):
            entry = _Obj(item, path, ("date", "name"))
            day = entry.date("date")
            entry.string("name")
            if day in seen:
                raise PolicyError(f"{day} is listed twice", path=entry.at("date"))
            if key == "extra_working_days" and day.weekday() not in weekend:
                raise PolicyError(
                    f"{day} is not a weekend day: only weekend days can be made working days",
                    path=entry.at("date"),
                )
            if key == "extra_working_days" and day in days["holidays"]:
                raise PolicyError(f"{day} is also a holiday", path=entry.at("date"))
            seen.add(day)
        days[key] = seen
    return Calendar(
        weekend=frozenset(weekend),
        holidays=frozenset(days["holidays"]),
        extra_working_days=frozenset(days["extra_working_days"]),
        tz=tz,
    )


_TOP_KEYS = (
    "format",
    "id",
    "version",
    "effective_from",
    "name",
    "legal_basis",
    "period",
    "timezone_offset",
    "calendar",
    "score",
    "general_criteria",
    "adjustments",
    "task",
    "grades",
    "overrides",
    "leader_unit",
    "quota",
    "year",
    "appeals",
    "declaration_deadline",
    "hr_decision",
    "flags",
)


def parse_policy(document: Any) -> Policy:
    """Validate ``document`` strictly and return the frozen ``Policy``.

    Refused with a ``PolicyError`` naming the path: unknown or missing keys, wrong types,
    floats, malformed decimal strings or dates, values out of range, criteria maxima that do
    not add up to ``general_max``, grade thresholds not strictly descending, references to
    unknown grades or criteria, formula syntax errors or unknown variables (with the position),
    a formula that divides by zero or exceeds ``task_max`` at the corners of its inputs.
    """
    root = "document"
    _check_floats(document, root)
    doc = _Obj(document, root, _TOP_KEYS)

    if doc.raw("format") != FORMAT or isinstance(doc.raw("format"), bool):
        raise PolicyError(
            f"unsupported format {doc.raw('format')!r}: this version reads format {FORMAT}",
            path=doc.at("format"),
        )
    policy_id = doc.raw("id")
    if not isinstance(policy_id, str) or not _ID_RE.match(policy_id) or len(policy_id) > 128:
        raise PolicyError(
            f"expected an identifier (lower-case letters, digits, '.', '_', '-'), found "
            f"{policy_id!r}",
            path=doc.at("id"),
        )
    version = doc.integer("version", low=1)
    effective_from = doc.date("effective_from")
    name = doc.string("name")
    legal_basis = doc.string("legal_basis")
    period = cast(PeriodKind, doc.choice("period", ("month", "quarter")))
    tz = _timezone(doc.raw("timezone_offset"), doc.at("timezone_offset"))
    calendar = _calendar_of(doc.obj("calendar", ("weekend", "holidays", "extra_working_days")), tz)

    # score, criteria, adjustments
    score = doc.obj("score", ("general_max", "task_max", "places"))
    general_max = score.decimal("general_max", positive=True)
    task_max = score.decimal("task_max", positive=True)
    places = score.integer("places", low=0, high=9)
    criteria: list[Criterion] = []
    for path, item in doc.items("general_criteria"):
        entry = _Obj(item, path, ("code", "name", "name_vi", "max"))
        code = entry.code("code")
        if code in RESERVED_TARGETS:
            raise PolicyError(
                f"{code!r} is reserved (the general total, the task points)", path=entry.at("code")
            )
        if any(c.code == code for c in criteria):
            raise PolicyError(f"criterion {code!r} is listed twice", path=entry.at("code"))
        criteria.append(
            Criterion(
                code,
                entry.string("name"),
                entry.string("name_vi"),
                entry.decimal("max", positive=True),
            )
        )
    total = sum((Fraction(c.max) for c in criteria), Fraction(0))
    if total != Fraction(general_max):
        raise PolicyError(
            f"the criteria maxima add up to {_show(total)}, not score.general_max {general_max}",
            path=doc.at("general_criteria"),
        )
    adjustments = doc.obj("adjustments", ("targets", "max_abs", "second_approver"))
    targets = adjustments.codes("targets", non_empty=False)
    allowed_targets = [c.code for c in criteria] + sorted(RESERVED_TARGETS)
    for index, target in enumerate(targets):
        if target not in allowed_targets:
            raise PolicyError(
                f"unknown adjustment target {target!r} (allowed: {', '.join(allowed_targets)})",
                path=f"{adjustments.at('targets')}[{index}]",
            )
    max_abs = adjustments.decimal("max_abs", positive=True, high=general_max + task_max)
    second_approver = adjustments.boolean("second_approver")

    # grades (needed by the task checks' references below)
    grades: list[Grade] = []
    for path, item in doc.items("grades"):
        entry = _Obj(item, path, ("code", "min", "name_vi"))
        code = entry.code("code")
        if any(g.code == code for g in grades):
            raise PolicyError(f"grade {code!r} is listed twice", path=entry.at("code"))
        minimum = entry.decimal("min", low=Decimal(0), high=general_max + task_max)
        if grades and minimum >= grades[-1].min:
            raise PolicyError(
                f"thresholds must be strictly descending: {minimum} follows {grades[-1].min}",
                path=entry.at("min"),
            )
        grades.append(Grade(code, minimum, entry.string("name_vi")))
    if grades[-1].min != 0:
        raise PolicyError(
            f'the last grade must start at "0" so every total has a grade, found {grades[-1].min}',
            path=f"{doc.at('grades')}[{len(grades) - 1}].min",
        )
    grade_codes = [g.code for g in grades]

    # task
    task = doc.obj(
        "task",
        (
            "conversion",
            "formula",
            "satisfaction_default",
            "quality_failure_deduction",
            "delay_deduction",
            "exemption_waives",
            "early_finish_bonus",
            "spot_check_not_confirmed",
        ),
    )
    conversion = cast(Conversion, task.choice("conversion", ("products", "hours")))
    formula = Formula.parse(task.raw("formula"), FORMULA_VARIABLES, path=task.at("formula"))
    satisfaction_default = task.decimal("satisfaction_default", low=Decimal(0), high=Decimal(100))
    quality_failure = task.decimal("quality_failure_deduction", low=Decimal(0), high=Decimal(1))
    delay = task.decimal("delay_deduction", low=Decimal(0), high=Decimal(1))
    waives = task.codes("exemption_waives", non_empty=False)
    for index, waived in enumerate(waives):
        if waived not in WAIVABLE:
            raise PolicyError(
                f"an exemption can waive {', '.join(sorted(WAIVABLE))}, not {waived!r}",
                path=f"{task.at('exemption_waives')}[{index}]",
            )
    early_finish_bonus = task.decimal("early_finish_bonus", low=Decimal(0))
    spot_check = cast(Effect, task.choice("spot_check_not_confirmed", ("void", "flag")))
    _check_formula_range(formula, task_max, early_finish_bonus, task.at("formula"))

    # overrides
    overrides_obj = doc.obj("overrides", ("conduct", "discipline", "leader_unit_corruption"))
    conduct_obj = overrides_obj.optional_obj("conduct", ("kinds", "grade"))
    conduct = None
    if conduct_obj is not None:
        conduct = ConductOverride(
            frozenset(conduct_obj.codes("kinds")), _grade_ref(conduct_obj, "grade", grade_codes)
        )
    discipline_obj = overrides_obj.optional_obj(
        "discipline", ("levels", "min_level", "scope", "grade")
    )
    discipline = None
    if discipline_obj is not None:
        levels = discipline_obj.codes("levels")
        min_level = discipline_obj.raw("min_level")
        if min_level not in levels:
            raise PolicyError(
                f"unknown discipline level {min_level!r} (levels: {', '.join(levels)})",
                path=discipline_obj.at("min_level"),
            )
        discipline = DisciplineOverride(
            levels,
            min_level,
            cast(Literal["year", "period"], discipline_obj.choice("scope", ("year", "period"))),
            _grade_ref(discipline_obj, "grade", grade_codes),
        )
    corruption_obj = overrides_obj.optional_obj("leader_unit_corruption", ("grade",))
    corruption = None
    if corruption_obj is not None:
        corruption = LeaderCorruptionOverride(_grade_ref(corruption_obj, "grade", grade_codes))

    # leader unit factor
    leader_obj = doc.optional_obj("leader_unit", ("min_grade", "met", "otherwise", "applies_to"))
    leader_unit = None
    if leader_obj is not None:
        leader_unit = LeaderUnitFactor(
            _grade_ref(leader_obj, "min_grade", grade_codes),
            leader_obj.decimal("met", low=Decimal(0), high=Decimal(1)),
            leader_obj.decimal("otherwise", low=Decimal(0), high=Decimal(1)),
            cast(Literal["task", "total"], leader_obj.choice("applies_to", ("task", "total"))),
        )

    # quota
    quota_obj = doc.optional_obj(
        "quota",
        ("grade", "max_ratio", "of_grades", "per", "rounding", "tie_break", "demote_to"),
        ("reading",),
    )
    quota = None
    if quota_obj is not None:
        quota = _quota(quota_obj, grade_codes)

    # year
    year_obj = doc.obj("year", ("method", "excluded_leave", "ranking_deadline"))
    ranking = year_obj.obj("ranking_deadline", ("month", "day"))
    month = ranking.integer("month", low=1, high=12)
    day = ranking.integer("day", low=1, high=_calendar.monthrange(2001, month)[1])
    year = YearRule(
        cast(
            Literal["mean_of_months_worked"], year_obj.choice("method", ("mean_of_months_worked",))
        ),
        frozenset(year_obj.codes("excluded_leave", non_empty=False)),
        month,
        day,
    )

    # appeals, declarations, HR decisions
    appeals = doc.obj("appeals", ("filing", "answer", "second_review"))
    filing = _deadline(appeals.obj("filing", ("days", "kind", "roll_forward")))
    answer = _deadline(appeals.obj("answer", ("days", "kind", "roll_forward")))
    second_review = appeals.boolean("second_review")
    declaration_obj = doc.optional_obj(
        "declaration_deadline", ("before_day", "month_offset", "late_effect")
    )
    declaration = None
    if declaration_obj is not None:
        declaration = DeclarationDeadline(
            declaration_obj.integer("before_day", low=1, high=28),
            declaration_obj.integer("month_offset", low=0, high=12),
            cast(Effect, declaration_obj.choice("late_effect", ("void", "flag"))),
        )
    hr = doc.obj(
        "hr_decision", ("consecutive_failing_years", "failing_grade", "due"), ("resolving_kinds",)
    )
    resolving: tuple[str, ...] | None = None  # absent: the rule before the key
    if hr.has("resolving_kinds"):
        resolving = hr.codes("resolving_kinds")
        for index, kind in enumerate(resolving):
            if kind not in HR_DECISION_KINDS:
                options = ", ".join(repr(k) for k in HR_DECISION_KINDS)
                raise PolicyError(
                    f"must be one of {options}, found {kind!r}",
                    path=f"{hr.at('resolving_kinds')}[{index}]",
                )
    hr_decision = HrDecisionRule(
        hr.integer("consecutive_failing_years", low=1),
        _grade_ref(hr, "failing_grade", grade_codes),
        _deadline(hr.obj("due", ("days", "kind", "roll_forward"))),
        resolving,
    )

    # flags
    flags_obj = doc.obj(
        "flags",
        (
            "hours_per_working_day",
            "fast_approval_seconds",
            "bulk_approval_count",
            "bulk_approval_window_days",
            "outlier_z",
        ),
    )
    flags = Flags(
        flags_obj.decimal("hours_per_working_day", positive=True, high=Decimal(24)),
        flags_obj.integer("fast_approval_seconds", low=0),
        flags_obj.integer("bulk_approval_count", low=1),
        flags_obj.integer("bulk_approval_window_days", low=0),
        flags_obj.decimal("outlier_z", positive=True),
    )

    return Policy(
        id=policy_id,
        version=version,
        effective_from=effective_from,
        name=name,
        legal_basis=legal_basis,
        period=period,
        general_max=general_max,
        task_max=task_max,
        criteria=tuple(criteria),
        adjustable=frozenset(targets),
        adjustment_max_abs=max_abs,
        adjustment_second_approver=second_approver,
        score_places=places,
        calendar=calendar,
        conversion=conversion,
        task_formula=formula,
        satisfaction_default=satisfaction_default,
        deductions=Deductions(quality_failure, delay, frozenset(waives)),
        early_finish_bonus=early_finish_bonus,
        spot_check_not_confirmed=spot_check,
        grades=tuple(grades),
        overrides=Overrides(conduct, discipline, corruption),
        leader_unit=leader_unit,
        quota=quota,
        year=year,
        appeal_filing=filing,
        appeal_answer=answer,
        second_review=second_review,
        declaration=declaration,
        hr_decision=hr_decision,
        flags=flags,
        document=cast(Mapping[str, Any], _freeze(document)),
    )


def _quota(obj: _Obj, grade_codes: Sequence[str]) -> Quota:
    grade = _grade_ref(obj, "grade", grade_codes)
    of_grades = obj.codes("of_grades")
    for index, code in enumerate(of_grades):
        if code not in grade_codes:
            raise PolicyError(
                f"unknown grade {code!r} (the policy's grades: {', '.join(grade_codes)})",
                path=f"{obj.at('of_grades')}[{index}]",
            )
    per = obj.codes("per", non_empty=False)
    for index, key in enumerate(per):
        if key not in QUOTA_GROUP_KEYS:
            raise PolicyError(
                f"unknown grouping key {key!r} (allowed: {', '.join(sorted(QUOTA_GROUP_KEYS))})",
                path=f"{obj.at('per')}[{index}]",
            )
    tie_break: list[TieBreak] = []
    for path, item in obj.items("tie_break"):
        entry = _Obj(item, path, ("key", "order"))
        key = entry.choice("key", sorted(TIE_BREAK_KEYS))
        if any(t.key == key for t in tie_break):
            raise PolicyError(f"{key!r} is listed twice", path=entry.at("key"))
        tie_break.append(
            TieBreak(key, cast(Literal["asc", "desc"], entry.choice("order", ("asc", "desc"))))
        )
    if tie_break[-1].key != UNIQUE_TIE_BREAK_KEY:
        raise PolicyError(
            f"the last tie-break key must be {UNIQUE_TIE_BREAK_KEY!r} (unique per person), so "
            "that replay always orders people the same way",
            path=f"{obj.at('tie_break')}[{len(tie_break) - 1}].key",
        )
    demote_to = _grade_ref(obj, "demote_to", grade_codes)
    if demote_to == grade:
        raise PolicyError("demote_to must differ from grade", path=obj.at("demote_to"))
    reading = obj.choice("reading", QUOTA_READINGS) if obj.has("reading") else "population"
    if reading == "fixed_point" and not {grade, demote_to} <= set(of_grades):
        raise PolicyError(
            "the fixed-point reading counts those left after the demotion: grade and "
            "demote_to must both be in of_grades",
            path=obj.at("reading"),
        )
    return Quota(
        reading=cast(Literal["population", "before_demotion", "fixed_point"], reading),
        grade=grade,
        max_ratio=obj.decimal("max_ratio", low=Decimal(0), high=Decimal(1)),
        of_grades=frozenset(of_grades),
        per=per,
        rounding=cast(
            Literal["floor", "ceil", "half_up"],
            obj.choice("rounding", ("floor", "ceil", "half_up")),
        ),
        tie_break=tuple(tie_break),
        demote_to=demote_to,
    )


def _check_formula_range(
    formula: Formula, task_max: Decimal, early_finish_bonus: Decimal, path: str
) -> None:
    """The formula must evaluate without division by zero when every input is 0 and when every
    input is at its top (percentages 100, C with the full early-finish bonus), and stay within
    0..task_max there."""
    top = Fraction(100)
    corners = {
        "all inputs 0": dict.fromkeys(("Q", "C", "P", "E", "S"), Fraction(0)),
        "all inputs at their top": {
            "Q": top,
            "C": top * (1 + Fraction(early_finish_bonus)),
            "P": top,
            "E": top,
            "S": top,
        },
    }
    for label, values in corners.items():
        values["task_max"] = Fraction(task_max)
        try:
            result = formula.evaluate(values)
        except PolicyError as exc:
            raise PolicyError(f"{exc.message} with {label}", path=path) from None
        if not 0 <= result <= Fraction(task_max):
            raise PolicyError(
                f"gives {_show(result)} with {label}, outside 0..task_max ({task_max})", path=path
            )


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Shipped packs
# --------------------------------------------------------------------------------------------


def _refuse_float(text: str) -> Any:
    raise PolicyError(f"floats are not allowed: {text}", path="document")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"duplicate key {key!r}", path="document")
        out[key] = value
    return out


def shipped_policy(name: str) -> dict[str, Any]:
    """The JSON document of a shipped pack (``SHIPPED_POLICIES``), a fresh dict each call."""
    if name not in SHIPPED_POLICIES:
        raise PolicyError(
            f"no shipped policy {name!r} (shipped: {', '.join(SHIPPED_POLICIES)})", path="name"
        )
    pack = resources.files("domain").joinpath("policies").joinpath(f"{name}.json")
    text = pack.read_text("utf-8")
    document = json.loads(
        text,
        parse_float=_refuse_float,
        parse_constant=_refuse_float,
        object_pairs_hook=_no_duplicates,
    )
    return cast(dict[str, Any], document)
