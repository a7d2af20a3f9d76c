"""An inspector's findings (``domain/inspections.py``): recorded once, by an inspector over the
subject's unit, citing earlier positions only; every refusal records nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.domain.world import LAN, World, assignment, at

FINDING = "inspection.finding_recorded"


def finding(**extra: Any) -> dict[str, Any]:
    return {
        "finding": "tt-2026-01",
        "employee": LAN,
        "period": "2026-03",
        "facts": [],
        "severity": "minor",
        "summary": "Hồ sơ kê khai thiếu minh chứng cho 2 sản phẩm",
        **extra,
    }


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    world = World(db_url)
    world.organise()
    world.employ(LAN)
    yield world
    world.service.close()


def test_a_finding_by_an_inspector(w: World) -> None:
    w.now = at("2026-03-02")
    assigned = w.do("tuan.sup", "work.assigned", assignment("lan-03-01"))
    recorded = w.do("binh.insp", FINDING, finding(facts=[assigned.seq]))
    assert recorded.type == FINDING and recorded.seq == assigned.seq + 1
    on_unit = {
        "finding": "tt-2026-02",
        "unit": "KH-W1",
        "severity": "observation",
        "summary": "Quy trình một cửa chưa niêm yết",
    }
    w.do("binh.insp", FINDING, on_unit)
    w.refused("binh.insp", FINDING, finding(), "reference.taken")
    w.refused("tuan.sup", FINDING, finding(finding="tt-x"), "role.missing")
    w.refused("binh.insp", FINDING, finding(finding="tt-y", unit="KH-W1"), "state.invalid")
    w.refused(
        "binh.insp", FINDING, {**on_unit, "finding": "tt-z", "period": "2026-03"}, "state.invalid"
    )
    w.refused("binh.insp", FINDING, finding(finding="tt-w", facts=[10**6]), "reference.unknown")
    w.refused("binh.insp", FINDING, finding(finding="tt-v", employee="nobody"), "reference.unknown")
    w.refused("binh.insp", FINDING, finding(finding="tt-u", severity="fatal"), "fact.invalid")
    w.verify()
