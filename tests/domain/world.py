"""A small signed world for domain tests: people with keys, a clock, and the ledger service.

``World`` bootstraps a ledger (with its own key for derived facts), lets tests move the clock,
sign facts as any person and submit them, and checks that a refusal recorded nothing
(``refused`` for a fact, ``refused_raw`` for any bytes). It also reads the log back (``entry``,
``fact_at``, ``log_bytes``), aggregates as they stand now or as they stood before a log
position (``get``, ``versions_before``), and verifies the whole log. ``assignment`` writes the
data of a ``work.assigned``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any
from uuid import UUID

import pytest

from bench.common import check_appended, sample_catalogue
from domain.errors import Refusal
from domain.policy import shipped_policy
from domain.schemas import period_start
from domain.service import Appended, LedgerService, TimeWindow
from ledger.config import parse_database
from ledger.online import DatabaseSource
from signing.entry import Entry, decode_entry
from signing.facts import Fact, read_fact, sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey
from signing.verify import verify

UTC = dt.UTC
START = dt.datetime(2025, 12, 15, 2, 0, tzinfo=UTC)
LAN = "lan.nguyen"
MARCH = "2026-03"


def at(day: str, hour: int = 3) -> dt.datetime:
    """A UTC instant on ``day`` (10:00 in Vietnam for the default hour)."""
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assignment(
    item: str,
    employee: str = LAN,
    period: str = MARCH,
    *,
    code: str = "OSS-01",
    due: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The data of a ``work.assigned`` (due on the 20th of ``period`` unless told)."""
    due = due or (period_start(period) + dt.timedelta(days=19)).isoformat()
    return {"item": item, "employee": employee, "code": code, "period": period, "due": due, **extra}


def refused_raw(service: LedgerService, raw: bytes, rule: str) -> Refusal:
    """Submit raw bytes, expect a refusal naming ``rule``, and check the log did not grow."""
    size = service.sealed.log_size()
    with pytest.raises(Refusal) as caught:
        service.submit(raw)
    assert caught.value.rule == rule, str(caught.value)
    assert service.sealed.log_size() == size
    return caught.value


class World:
    def __init__(self, db_url: str, start: dt.datetime = START) -> None:
        self.now = start
        self.admin = SigningKey.generate("admin")
        self.keys: dict[str, SigningKey] = {"admin": self.admin}
        self.ledger_signer = SigningKey.generate("ledger")  # the key of derived facts
        self.service = LedgerService(
            parse_database(db_url),
            ledger_signer=self.ledger_signer,
            clock=lambda: self.now,
            window=TimeWindow(past=None),
        )
        self.log_key = SigningKey.generate("kpi.test/log")
        self.service.bootstrap(self.log_key, self.admin, time=self.now)

    # -- people and facts ------------------------------------------------------------------
    def person(self, name: str) -> SigningKey:
        key = SigningKey.generate(name)
        self.service.submit(self._registration(key))
        return key

    def _registration(self, key: SigningKey) -> bytes:
        """A new key for ``key.name``, remembered, and its registration by the administrator."""
        self.keys[key.name] = key
        return key_registration(self.admin, key.verifier(), time=self.now).to_bytes()

    def sign(self, who: str, fact_type: str, data: dict[str, Any], **kw: Any) -> bytes:
        return sign_fact(
            self.keys[who], fact_type, data, time=kw.pop("time", self.now), **kw
        ).to_bytes()

    def do(self, who: str, fact_type: str, data: dict[str, Any], **kw: Any) -> Appended:
        return self.service.submit(self.sign(who, fact_type, data, **kw))

    def refused(self, who: str, fact_type: str, data: dict[str, Any], rule: str) -> Refusal:
        """Submit, expect a refusal naming ``rule``, and check nothing was recorded."""
        refusal = self.refused_raw(self.sign(who, fact_type, data), rule)
        assert refusal.fact_type == fact_type and refusal.actor == who
        return refusal

    def refused_raw(self, raw: bytes, rule: str) -> Refusal:
        """Submit raw bytes, expect a refusal naming ``rule``, and check nothing was recorded."""
        return refused_raw(self.service, raw, rule)

    # -- reading back ----------------------------------------------------------------------
    def entry(self, seq: int) -> Entry:
        found = self.service.sealed.read_entry(seq)
        assert found is not None, f"no entry at {seq}"
        return found

    def fact_at(self, seq: int) -> Fact:
        """The signed fact sealed at ``seq``."""
        return read_fact(self.entry(seq).envelope, strict=False)

    def log_bytes(self) -> dict[int, bytes]:
        """Every entry's canonical bytes, by position."""
        out: dict[int, bytes] = {}
        for row in self.service.sealed.read_rows():
            assert row.entry is not None
            out[row.seq] = row.entry
        return out

    def get(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """An aggregate read from the store (at ``version``, or as it stands now)."""
        return self.service.repository.get(aggregate_id, version=version)

    def versions_before(self, seq: int) -> dict[UUID, int]:
        """The version each stream had before log position ``seq``."""
        versions: dict[UUID, int] = {}
        for row in self.service.sealed.read_rows(0, seq):
            assert row.entry is not None
            entry = decode_entry(row.entry)
            versions[UUID(entry.stream)] = entry.version
        return versions

    def verify(self) -> None:
        """The whole log verifies: signatures, seals, order."""
        report = verify(DatabaseSource(self.service.sealed), [], workers=1)
        assert report.problems == [], report.problems

    # -- a standard organisation -------------------------------------------------------------
    def organise(self) -> None:
        """Province KH; agency KH-W1 (a ward) with its one-stop section; people and roles;
        the default policy and a catalogue, published in December 2025: one batch."""
        people = ("hoa.hr", "minh.hr", "tuan.sup", "an.rev", "binh.insp", "oss.system")
        batch = [self._registration(SigningKey.generate(name)) for name in people]
        facts: list[tuple[str, str, dict[str, Any]]] = [
            (
                "admin",
                "org.unit_created",
                {"unit": "KH", "name": "Tỉnh Khánh Hòa", "kind": "province"},
            ),
            *(
                ("admin", "role.granted", {"principal": who, "role": role, "unit": "KH"})
                for who, role in (
                    ("hoa.hr", "hr"),
                    ("minh.hr", "hr"),
                    ("an.rev", "reviewer"),
                    ("binh.insp", "inspector"),
                )
            ),
            *(
                (
                    "hoa.hr",
                    "org.unit_created",
                    {"unit": unit, "name": name, "kind": kind, "parent": parent},
                )
                for unit, name, kind, parent in (
                    ("KH-W1", "UBND phường 1", "agency", "KH"),
                    ("KH-W1-OSS", "Bộ phận một cửa", "section", "KH-W1"),
                    ("KH-W2", "UBND phường 2", "agency", "KH"),
                )
            ),
            (
                "hoa.hr",
                "role.granted",
                {"principal": "tuan.sup", "role": "supervisor", "unit": "KH-W1-OSS"},
            ),
            (
                "hoa.hr",
                "role.granted",
                {"principal": "oss.system", "role": "integrator", "unit": "KH-W1"},
            ),
            (
                "hoa.hr",
                "org.position_defined",
                {"position": "officer", "name": "Công chức một cửa", "leader": False},
            ),
            (
                "hoa.hr",
                "org.position_defined",
                {"position": "head", "name": "Trưởng bộ phận", "leader": True},
            ),
            ("admin", "policy.published", {"scope": "KH", "document": shipped_policy("default")}),
            *(("hoa.hr", "catalogue.published", sample_catalogue(a)) for a in ("KH-W1", "KH-W2")),
        ]
        batch += [self.sign(who, fact_type, data) for who, fact_type, data in facts]
        self.submit_all(batch)

    def submit_all(self, envelopes: list[bytes]) -> None:
        """Record envelopes signed by several actors (the in-process service: one batch)."""
        check_appended(self.service.submit_many(envelopes))

    def grant(self, principal: str, role: str, unit: str, by: str = "hoa.hr") -> Appended:
        return self.do(by, "role.granted", {"principal": principal, "role": role, "unit": unit})

    def employ(self, name: str, unit: str = "KH-W1-OSS", position: str = "officer") -> None:
        self.person(name)
        self.register(name, unit, position)

    def register(self, name: str, unit: str = "KH-W1-OSS", position: str = "officer") -> Appended:
        """Register ``name`` (a principal with a key already) as an employee."""
        return self.do(
            "hoa.hr",
            "employee.registered",
            {
                "employee": name,
                "name": name.title(),
                "unit": unit,
                "position": position,
                "since": "2026-01-01",
            },
        )
