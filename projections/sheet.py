"""A sheet: every fact about one employee's period that moves their score, in log order.

The work items assigned to them for the period (each item's whole stream: assignment,
declarations, verdicts, checks, delays, exemptions, appeal rulings), their assessment stream
(self and supervisor marks, adjustments, rulings) and the citizen-satisfaction ratings of
the period. Folding is only collecting: what each fact *means* is decided when the score is
computed (``projections/score.py``), under the policy chosen then, so the same sheet can be
scored under another policy (what-if) without reading the log again.

A sheet only grows: each fact it folds adds one compact row (``apply`` returns it), so the
projection stores a sheet as its rows, appended once each (``kpi_view_sheet_rows``), and
rebuilds it from them (``from_rows``) when it is not in memory: memory holds a bounded cache
of sheets, and writing costs one row per fact, however often a period is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from projections.facts import Fact

WORK_TYPES = frozenset(
    {
        "work.assigned",
        "work.declared",
        "work.approved",
        "work.rejected",
        "work.quality_failed",
        "work.delayed",
        "work.exemption_granted",
        "work.spot_checked",
        "work.ruling_applied",
    }
)
ASSESSMENT_TYPES = frozenset(
    {
        "assessment.self_assessed",
        "assessment.supervisor_assessed",
        "score.adjustment_proposed",
        "score.adjustment_approved",
        "score.adjustment_declined",
        "score.ruling_applied",
    }
)
RATING_TYPES = frozenset({"survey.rated"})
SHEET_TYPES = WORK_TYPES | ASSESSMENT_TYPES | RATING_TYPES


def subject_key(employee: str, period: str) -> str:
    return f"{employee}/{period}"


def subject_of(fact: Fact) -> tuple[str, str] | None:
    """(employee, period) named by the fact itself; None for work facts after the assignment
    (they name only their item: the item's stream says whose it is)."""
    d = fact.data
    if fact.type in ("work.assigned", "survey.rated") or fact.type in ASSESSMENT_TYPES:
        if fact.type == "score.ruling_applied":
            d = d["target"]
        return d["employee"], d["period"]
    return None


@dataclass
class Sheet:
    employee: str
    period: str
    items: dict[str, list[list[Any]]] = field(default_factory=dict)  # item -> compact facts
    assessment: list[list[Any]] = field(default_factory=list)
    ratings: list[list[Any]] = field(default_factory=list)
    last_seq: int = -1

    def apply(self, fact: Fact, item: str | None = None) -> tuple[str | None, list[Any]] | None:
        """Fold one fact; work facts need the ``item`` they are about (their stream's).
        Returns the row added, with its item (None for assessment and rating rows), or None
        when the fact adds nothing (already folded, or not a sheet fact)."""
        if fact.seq <= self.last_seq or fact.type not in SHEET_TYPES:
            return None  # already folded: replays are idempotent
        code = None
        if fact.type in WORK_TYPES:
            code = item or fact.data.get("item") or fact.data["target"]["item"]
        row = fact.compact()
        self.add(code, row)
        return code, row

    def add(self, item: str | None, row: list[Any]) -> None:
        """Fold a row ``apply`` returned (a stored one, read back)."""
        if row[0] <= self.last_seq:
            return
        if item is not None:
            self.items.setdefault(item, []).append(row)
        elif row[1] in RATING_TYPES:
            self.ratings.append(row)
        else:
            self.assessment.append(row)
        self.last_seq = row[0]

    @classmethod
    def from_rows(
        cls, employee: str, period: str, rows: Iterable[tuple[str | None, list[Any]]]
    ) -> Sheet:
        """The sheet made of stored rows (in log order)."""
        sheet = cls(employee, period)
        for item, row in rows:  # strings interned as ``Fact.compact`` does
            row[1], row[2] = intern(row[1]), intern(row[2])
            row[5] = {intern(k): v for k, v in row[5].items()}
            sheet.add(item, row)
        return sheet

    @property
    def key(self) -> str:
        return subject_key(self.employee, self.period)

    def facts(self) -> list[Fact]:
        """Every fact of the sheet, in log order."""
        rows = [r for rows in self.items.values() for r in rows] + self.assessment + self.ratings
        return sorted((Fact.from_compact("", r) for r in rows), key=lambda f: f.seq)

    def upto(self, seq: int) -> Sheet:
        """The sheet as it stood before log position ``seq``."""
        out = Sheet(self.employee, self.period)
        for code, rows in self.items.items():
            kept = [r for r in rows if r[0] < seq]
            if kept and kept[0][1] == "work.assigned":
                out.items[code] = kept
        out.assessment = [r for r in self.assessment if r[0] < seq]
        out.ratings = [r for r in self.ratings if r[0] < seq]
        seqs = [r[0] for r in out.assessment + out.ratings] + [
            r[0] for rows in out.items.values() for r in rows
        ]
        out.last_seq = max(seqs, default=-1)
        return out
