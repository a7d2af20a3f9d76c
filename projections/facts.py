"""Facts as the projections read them: one signed entry of the log, decoded once.

The projections trust the bytes they read to be the sealed log's (``kpi-ledger verify``
proves that, offline); they do not check signatures again. They decode the stored envelope
directly (``json`` and ``base64``, no canonical-form checks), which is several times faster
than rebuilding the domain event, and keep only what scores, traces and flags need.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from sys import intern
from typing import Any

# dropped when a fact is folded into a sheet: free text the projections never use, and what
# the sheet itself says (whose period, which item) or what only the fold needs (evidence, due
# dates, claimed completion times): a sheet row stays small, in memory and in the views
_BULKY = frozenset({"note", "legal_basis", "authority", "grounds", "details", "document", "items"})
_IN_SHEET = frozenset({"item", "employee", "period", "due", "done_at", "evidence"})
_DROPPED = _BULKY | _IN_SHEET


@dataclass(frozen=True, slots=True)
class Fact:
    """One log entry's fact: its position, stream, type, actor, claimed time, nonce and data."""

    seq: int
    stream: str
    type: str
    actor: str
    time: str  # RFC 3339 UTC, as signed
    nonce: str
    data: dict[str, Any]

    @property
    def at(self) -> dt.datetime:
        return parse_instant(self.time)

    def compact(self) -> list[Any]:
        """The fact as a small JSON list (what a sheet keeps): free text and what the sheet
        already says left out; the type, actor and keys interned (they recur in every
        sheet, and a sheet cache holds thousands of rows)."""
        data = {intern(k): v for k, v in self.data.items() if k not in _DROPPED}
        return [self.seq, intern(self.type), intern(self.actor), self.time, self.nonce, data]

    @classmethod
    def from_compact(cls, stream: str, row: list[Any]) -> Fact:
        seq, kind, actor, time, nonce, data = row
        return cls(int(seq), stream, kind, actor, time, nonce, data)


def decode(seq: int, stream: str, state: bytes) -> Fact:
    """The fact of a stored event whose state is its envelope bytes."""
    envelope = json.loads(state)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    return Fact(
        seq,
        stream,
        payload["type"],
        payload["actor"],
        payload["time"],
        payload["nonce"],
        payload["data"],
    )


@lru_cache(maxsize=65536)
def parse_instant(text: str) -> dt.datetime:
    """``2026-03-05T08:00:00Z`` (or with microseconds) as an aware UTC datetime."""
    return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)


@lru_cache(maxsize=4096)
def parse_day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)
