"""The policy decides whether an adjustment needs a second approver."""

from __future__ import annotations

from domain.policy import shipped_policy
from domain.service import Appended
from tests.domain.world import World, at

MARCH = "2026-03"
MARKS = {"political": "5", "ethics": "5", "discipline": "4.5", "competence": "5", "innovation": "4"}


def _adjustment_world(sqlite_url: str, second_approver: bool) -> World:
    w = World(sqlite_url)
    w.organise()
    document = shipped_policy("default")
    document.update(id="kh-single-approver", version=1, effective_from="2026-01-01")
    document["adjustments"]["second_approver"] = second_approver
    w.do("admin", "policy.published", {"scope": "KH-W2", "document": document})
    w.employ("lan.nguyen", unit="KH-W2")
    w.do("admin", "role.granted", {"principal": "tuan.sup", "role": "supervisor", "unit": "KH-W2"})
    w.now = at("2026-03-20")
    w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": "lan.nguyen", "period": MARCH, "scores": MARKS},
    )
    w.do(
        "hoa.hr",
        "score.adjustment_proposed",
        {
            "adjustment": "adj-1",
            "employee": "lan.nguyen",
            "period": MARCH,
            "criterion": "general",
            "delta": "0.5",
            "reason": "r",
            "legal_basis": "b",
        },
    )
    return w


def test_a_policy_without_a_second_approver_lets_the_proposer_approve(sqlite_url: str) -> None:
    w = _adjustment_world(sqlite_url, second_approver=False)
    approved = w.do(
        "hoa.hr",
        "score.adjustment_approved",
        {"adjustment": "adj-1", "employee": "lan.nguyen", "period": MARCH},
    )
    assert isinstance(approved, Appended)


def test_a_policy_with_a_second_approver_refuses_the_proposer(sqlite_url: str) -> None:
    w = _adjustment_world(sqlite_url, second_approver=True)
    w.refused(
        "hoa.hr",
        "score.adjustment_approved",
        {"adjustment": "adj-1", "employee": "lan.nguyen", "period": MARCH},
        "separation.same_person",
    )
