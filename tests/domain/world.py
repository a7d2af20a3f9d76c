"""A small signed world for domain tests: people with keys, a clock, and the ledger service.

``World`` bootstraps a ledger (with its own key for derived facts), lets tests move the clock,
sign facts as any person and submit them, and checks that a refusal recorded nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from domain.errors import Refusal
from domain.policy import shipped_policy
from domain.service import Appended, LedgerService, TimeWindow
from ledger.config import parse_database
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey

UTC = dt.UTC
START = dt.datetime(2025, 12, 15, 2, 0, tzinfo=UTC)


def at(day: str, hour: int = 3) -> dt.datetime:
    """A UTC instant on ``day`` (10:00 in Vietnam for the default hour)."""
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class World:
    def __init__(self, db_url: str, start: dt.datetime = START) -> None:
        self.now = start
        self.admin = SigningKey.generate("admin")
        self.keys: dict[str, SigningKey] = {"admin": self.admin}
        self.service = LedgerService(
            parse_database(db_url),
            ledger_signer=SigningKey.generate("ledger"),
            clock=lambda: self.now,
            window=TimeWindow(past=None),
        )
        self.service.bootstrap(SigningKey.generate("kpi.test/log"), self.admin, time=self.now)

    # -- people and facts ------------------------------------------------------------------
    def person(self, name: str) -> SigningKey:
        key = SigningKey.generate(name)
        self.keys[name] = key
        self.service.submit(key_registration(self.admin, key.verifier(), time=self.now).to_bytes())
        return key

    def sign(self, who: str, fact_type: str, data: dict[str, Any], **kw: Any) -> bytes:
        return sign_fact(
            self.keys[who], fact_type, data, time=kw.pop("time", self.now), **kw
        ).to_bytes()

    def do(self, who: str, fact_type: str, data: dict[str, Any], **kw: Any) -> Appended:
        return self.service.submit(self.sign(who, fact_type, data, **kw))

    def refused(self, who: str, fact_type: str, data: dict[str, Any], rule: str) -> Refusal:
        """Submit, expect a refusal naming ``rule``, and check nothing was recorded."""
        size = self.service.sealed.log_size()
        with pytest.raises(Refusal) as caught:
            self.do(who, fact_type, data)
        assert caught.value.rule == rule, str(caught.value)
        assert caught.value.fact_type == fact_type and caught.value.actor == who
        assert self.service.sealed.log_size() == size
        return caught.value

    # -- a standard organisation -------------------------------------------------------------
    def organise(self) -> None:
        """Province KH; agency KH-W1 (a ward) with its one-stop section; people and roles;
        the default policy and a catalogue, published in December 2025."""
        for name in ("hoa.hr", "minh.hr", "tuan.sup", "an.rev", "binh.insp", "oss.system"):
            self.person(name)
        self.do(
            "admin",
            "org.unit_created",
            {"unit": "KH", "name": "Tỉnh Khánh Hòa", "kind": "province"},
        )
        self.do("admin", "role.granted", {"principal": "hoa.hr", "role": "hr", "unit": "KH"})
        self.do("admin", "role.granted", {"principal": "minh.hr", "role": "hr", "unit": "KH"})
        self.do("admin", "role.granted", {"principal": "an.rev", "role": "reviewer", "unit": "KH"})
        self.do(
            "admin", "role.granted", {"principal": "binh.insp", "role": "inspector", "unit": "KH"}
        )
        self.do(
            "hoa.hr",
            "org.unit_created",
            {"unit": "KH-W1", "name": "UBND phường 1", "kind": "agency", "parent": "KH"},
        )
        self.do(
            "hoa.hr",
            "org.unit_created",
            {"unit": "KH-W1-OSS", "name": "Bộ phận một cửa", "kind": "section", "parent": "KH-W1"},
        )
        self.do(
            "hoa.hr",
            "org.unit_created",
            {"unit": "KH-W2", "name": "UBND phường 2", "kind": "agency", "parent": "KH"},
        )
        self.do(
            "hoa.hr",
            "role.granted",
            {"principal": "tuan.sup", "role": "supervisor", "unit": "KH-W1-OSS"},
        )
        self.do(
            "hoa.hr",
            "role.granted",
            {"principal": "oss.system", "role": "integrator", "unit": "KH-W1"},
        )
        self.do(
            "hoa.hr",
            "org.position_defined",
            {"position": "officer", "name": "Công chức một cửa", "leader": False},
        )
        self.do(
            "hoa.hr",
            "org.position_defined",
            {"position": "head", "name": "Trưởng bộ phận", "leader": True},
        )
        self.do("admin", "policy.published", {"scope": "KH", "document": shipped_policy("default")})
        for agency in ("KH-W1", "KH-W2"):
            self.do(
                "hoa.hr",
                "catalogue.published",
                {
                    "agency": agency,
                    "version": 1,
                    "effective_from": "2026-01-01",
                    "items": [
                        {
                            "code": "OSS-01",
                            "name": "Tiếp nhận hồ sơ",
                            "group": "B",
                            "products": "1",
                            "hours": "2",
                        },
                        {
                            "code": "OSS-02",
                            "name": "Thẩm định hồ sơ",
                            "group": "C",
                            "products": "1",
                            "hours": "7",
                        },
                        {
                            "code": "LEAD-01",
                            "name": "Chỉ đạo, điều hành",
                            "group": "A",
                            "products": "1",
                            "positions": ["head"],
                        },
                    ],
                },
            )

    def employ(self, name: str, unit: str = "KH-W1-OSS", position: str = "officer") -> None:
        self.person(name)
        self.do(
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
