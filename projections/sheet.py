"""A sheet: every fact about one employee's period that moves their score, in log order.

The work items assigned to them for the period (each item's whole stream: assignment,
declarations, verdicts, checks, delays, exemptions, appeal rulings), their assessment stream
(self and supervisor marks, adjustments, rulings) and the citizen-satisfaction ratings of
the period. Folding is only collecting: what each fact *means* is decided when the score is
computed (``projections/score.py``), under the policy chosen then, so the same sheet can be
scored under another policy (what-if) without reading the log again.

A sheet is plain JSON (``to_doc`` / ``from_doc``), so the projection keeps it in its view
and never has to hold every sheet in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def apply(self, fact: Fact, item: str | None = None) -> None:
        """Fold one fact; work facts need the ``item`` they are about (their stream's)."""
        if fact.seq <= self.last_seq:
            return  # already folded: replays are idempotent
        if fact.type in WORK_TYPES:
            code = item or fact.data.get("item") or fact.data["target"]["item"]
            self.items.setdefault(code, []).append(fact.compact())
        elif fact.type in ASSESSMENT_TYPES:
            self.assessment.append(fact.compact())
        elif fact.type in RATING_TYPES:
            self.ratings.append(fact.compact())
        else:
            return
        self.last_seq = fact.seq

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

    def to_doc(self) -> dict[str, Any]:
        return {
            "employee": self.employee,
            "period": self.period,
            "items": self.items,
            "assessment": self.assessment,
            "ratings": self.ratings,
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Sheet:
        return cls(
            doc["employee"],
            doc["period"],
            doc["items"],
            doc["assessment"],
            doc["ratings"],
            int(doc["last_seq"]),
        )
