"""``kpi-ledger show refusals [--actor A] [--rule R]``: the refusal journal as JSON lines."""

from __future__ import annotations

import hashlib
import json

import pytest

from api.cli import main
from ledger.journal import SELF_APPROVAL
from tests.domain.world import LAN, World, assignment, at


def test_show_refusals(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    w = World(db_url)
    try:
        w.organise()
        w.employ(LAN)
        w.now = at("2026-03-02")
        w.do("tuan.sup", "work.assigned", assignment("i-1"))
        w.do(LAN, "work.declared", {"item": "i-1", "done_at": "2026-03-01T03:00:00Z"})
        own = w.sign(LAN, "work.approved", {"item": "i-1"})
        w.refused_raw(own, SELF_APPROVAL)
        w.refused("an.rev", "work.approved", {"item": "i-1"}, "role.missing")
    finally:
        w.service.close()
    capsys.readouterr()

    def show(*argv: str) -> list[dict[str, object]]:
        assert main(["show", "refusals", "--db", db_url, *argv]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    everything = show()
    assert [(r["actor"], r["rule"]) for r in everything] == [
        ("an.rev", "role.missing"),
        (LAN, SELF_APPROVAL),
    ]
    [mine] = show("--actor", LAN)
    assert mine["fact_sha256"] == hashlib.sha256(own).hexdigest()
    assert mine["recorded_at"] == "2026-03-02T03:00:00.000000Z"
    assert show("--rule", "role.missing") == everything[:1]
    assert show("--actor", LAN, "--rule", "role.missing") == []
