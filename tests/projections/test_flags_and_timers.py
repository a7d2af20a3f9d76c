"""Flags and timers that say what they know, on both backends: the same-evidence flag is
filed under every claimant and names every claim; the entry-after-close flag cites the
late-entry request (and its approval) that let the entry in; the "HR decision due" item lists
each decision with its position and time, is overdue past its deadline, is not resolved by a
reward but by a dismissal or a "no action, with reasons" decision, and the policy's
``hr_decision.resolving_kinds`` decides which kinds resolve it. Read over HTTP as each
person sees it (``/v1/flags``, ``/v1/hr-due``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime, Settings
from domain.policy import shipped_policy
from domain.service import Appended
from ledger.config import parse_database
from ledger.home import LedgerHome
from projections.engine import Evaluations, hr_due_overdue
from projections.runners import rebuild
from tests.domain.test_scenarios import assign, close, declare
from tests.domain.world import LAN, World, at, sha

MAI, KHOA = "mai.tran", "khoa.le"
INSPECTOR, SUPERVISOR = "binh.insp", "tuan.sup"


@pytest.fixture
def http(db_url: str, w: World, tmp_path: Path) -> Iterator[Any]:
    """``get(who, path, **query)``: the service's answer to ``who`` (tokens issued on demand);
    the views are those ``ev`` wrote to the same database."""
    settings = Settings(parse_database(db_url), LedgerHome(tmp_path / "no-home"), projections=False)
    app = create_app(settings, runtime=lambda s: Runtime.open(s, service=w.service))
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        tokens: dict[str, str] = {}

        def get(who: str, path: str, **query: Any) -> Any:
            if who not in tokens:
                tokens[who] = rt.principals.issue(who)
            response = client.get(
                path, params=query, headers={"Authorization": f"Bearer {tokens[who]}"}
            )
            assert response.status_code == 200, response.text
            return response.json()

        yield get


def flags(ev: Evaluations, kind: str) -> dict[str, dict[str, Any]]:
    return {
        k: d for k, d in ev.view.docs("flag", ev.view.keys("flag")).items() if d["kind"] == kind
    }


def same_after_rebuild(db_url: str, ev: Evaluations) -> None:
    """A rebuild from the log writes the same flags, claims, requests and items."""
    views = ("flag", "evidence", "late_entry", "hr_due")
    before = {v: ev.view.docs(v, ev.view.keys(v)) for v in views}
    rebuild(parse_database(db_url))
    assert {v: ev.view.docs(v, ev.view.keys(v)) for v in views} == before


# -- same evidence ---------------------------------------------------------------------------


def test_same_evidence_is_seen_by_every_claimant(
    db_url: str, w: World, ev: Evaluations, http: Any
) -> None:
    w.employ(MAI)
    w.employ(KHOA)
    w.now = at("2026-03-05")
    for item, who in (("lan-1", LAN), ("mai-1", MAI), ("khoa-1", KHOA), ("lan-2", LAN)):
        assign(w, item, who)
    evidence = [sha("biên bản 17")]
    first = declare(w, "lan-1", evidence=evidence)
    again = declare(w, "lan-2", evidence=evidence)  # Lan twice, nobody else yet: no flag
    ev.catch_up()
    assert flags(ev, "same_evidence") == {}
    second = declare(w, "mai-1", MAI, evidence=evidence)
    ev.catch_up()
    lan, mai = f"{LAN}/2026-03", f"{MAI}/2026-03"
    claims = [
        {"employee": LAN, "period": "2026-03", "seq": first.seq},
        {"employee": MAI, "period": "2026-03", "seq": second.seq},
    ]
    expected = {
        f"same_evidence/{s}/{second.seq}": {
            "kind": "same_evidence",
            "subject": s,
            "facts": [first.seq, second.seq],
            "why": f"evidence {evidence[0][:12]}… claimed by {LAN} (at {first.seq}),"
            f" {MAI} (at {second.seq})",
            "evidence": evidence[0],
            "claims": claims,
        }
        for s in (lan, mai)
    }
    assert flags(ev, "same_evidence") == expected
    # each claimant reads it (the first too), and so does their supervisor
    for who, subjects in ((LAN, [lan]), (MAI, [mai]), (SUPERVISOR, [lan, mai])):
        seen = http(who, "/v1/flags", kind="same_evidence")["items"]
        assert [f["subject"] for f in seen] == subjects, who
        assert all(f["facts"] == [first.seq, second.seq] for f in seen)
    assert http(KHOA, "/v1/flags", kind="same_evidence")["items"] == []

    third = declare(w, "khoa-1", KHOA, evidence=evidence)
    ev.catch_up()
    raised = {k: d for k, d in flags(ev, "same_evidence").items() if k.endswith(f"/{third.seq}")}
    assert sorted(d["subject"] for d in raised.values()) == sorted([lan, mai, f"{KHOA}/2026-03"])
    for doc in raised.values():
        assert doc["facts"] == [first.seq, second.seq, third.seq]
        assert [c["seq"] for c in doc["claims"]] == [first.seq, second.seq, third.seq]
    assert again.seq not in {s for d in flags(ev, "same_evidence").values() for s in d["facts"]}
    khoa_sees = http(KHOA, "/v1/flags", kind="same_evidence")["items"]
    assert [f["facts"] for f in khoa_sees] == [[first.seq, second.seq, third.seq]]
    same_after_rebuild(db_url, ev)


def test_same_evidence_hides_a_claimant_the_reader_may_not_read(
    w: World, ev: Evaluations, http: Any
) -> None:
    """Lan (KH-W1) and Mai (KH-W2, another agency) claim the same evidence: each, and her
    supervisor, reads the flag with the other claimant anonymised ("another claimant", her
    position kept) and a ``why`` that does not name her; an inspector reads both names."""
    other_sup = "vy.sup"
    w.person(other_sup)
    w.grant(other_sup, "supervisor", "KH-W2")
    w.employ(MAI, unit="KH-W2")
    w.now = at("2026-03-05")
    assign(w, "lan-1", LAN)
    assign(w, "mai-1", MAI, by=other_sup)
    evidence = [sha("biên bản 18")]
    first = declare(w, "lan-1", evidence=evidence)
    second = declare(w, "mai-1", MAI, evidence=evidence)
    ev.catch_up()
    lan, mai = f"{LAN}/2026-03", f"{MAI}/2026-03"
    assert sorted(d["subject"] for d in flags(ev, "same_evidence").values()) == [lan, mai]
    named = f"{evidence[0][:12]}… claimed by {LAN} (at {first.seq}), {MAI} (at {second.seq})"

    def seen(who: str) -> list[dict[str, Any]]:
        return list(http(who, "/v1/flags", kind="same_evidence")["items"])

    for who, subject, hidden in (
        (LAN, lan, MAI),
        (SUPERVISOR, lan, MAI),
        (MAI, mai, LAN),
        (other_sup, mai, LAN),
    ):
        [flag] = seen(who)
        assert flag["subject"] == subject, who
        assert hidden not in flag["why"] and hidden not in str(flag["claims"]), who
        assert flag["facts"] == [first.seq, second.seq]
        expected = [LAN, MAI]
        assert [c["employee"] for c in flag["claims"]] == [
            "another claimant" if e == hidden else e for e in expected
        ], who
        assert [c["seq"] for c in flag["claims"]] == [first.seq, second.seq]
        assert "another claimant (at " in flag["why"]
    # the inspector reads both names, as recorded
    both = seen(INSPECTOR)
    assert sorted(f["subject"] for f in both) == [lan, mai]
    for flag in both:
        assert flag["why"] == f"evidence {named}"
        assert [c["employee"] for c in flag["claims"]] == [LAN, MAI]
    assert seen("oss.system") == []


# -- entry after close -----------------------------------------------------------------------


def test_an_entry_after_close_cites_its_late_entry_request(
    db_url: str, w: World, ev: Evaluations
) -> None:
    w.now = at("2026-01-20")
    assign(w, "lan-01", period="2026-01")
    declare(w, "lan-01")
    w.now = at("2026-02-02")
    closed = close(w, "2026-01")
    w.now = at("2026-02-04")
    request = {
        "request": "le-1",
        "agency": "KH-W1",
        "period": "2026-01",
        "employee": LAN,
        "reason": "quên phê duyệt",
        "until": "2026-02-10T00:00:00Z",
    }
    requested = w.do("hoa.hr", "period.late_entry_requested", request)
    approved = w.do("minh.hr", "period.late_entry_approved", {"request": "le-1", "agency": "KH-W1"})
    ev.catch_up()  # the request is known to the views before the entry comes
    late = w.do(SUPERVISOR, "work.approved", {"item": "lan-01", "late_entry": "le-1"})
    spot = w.do(
        INSPECTOR,
        "work.spot_checked",
        {"item": "lan-01", "result": "confirmed", "note": "đã kiểm tra"},
    )
    ev.catch_up()
    found = flags(ev, "entry_after_close")
    key = f"{LAN}/2026-01"
    assert found[f"entry_after_close/{key}/{late.seq}"] == {
        "kind": "entry_after_close",
        "subject": key,
        "facts": [closed.seq, requested.seq, approved.seq, late.seq],
        "why": f"work.approved recorded at {late.seq} after the close of 2026-01 (at {closed.seq})"
        f", under late-entry request le-1 (requested at {requested.seq}, approved at"
        f" {approved.seq})",
        "late_entry": {
            "request": "le-1",
            "requested_seq": requested.seq,
            "approved_seq": approved.seq,
        },
    }
    # a spot check needs no request: it cites the close and itself
    assert found[f"entry_after_close/{key}/{spot.seq}"]["facts"] == [closed.seq, spot.seq]
    assert found[f"entry_after_close/{key}/{spot.seq}"]["late_entry"] is None
    assert ev.view.doc("late_entry", "KH-W1/le-1") == {
        "request": "le-1",
        "agency": "KH-W1",
        "period": "2026-01",
        "employee": LAN,
        "requested_seq": requested.seq,
        "requested_by": "hoa.hr",
        "until": "2026-02-10T00:00:00Z",
        "approved_seq": approved.seq,
        "approved_by": "minh.hr",
    }
    same_after_rebuild(db_url, ev)


# -- HR decision due -------------------------------------------------------------------------


def failing_years(w: World, ev: Evaluations) -> Appended:
    """Lan fails 2026 and 2027 (one item each January, never declared: 0 points); each
    December closed on 2 January. Returns the close that raises the item."""
    last = None
    for year in (2026, 2027):
        w.now = at(f"{year}-01-05")
        assign(w, f"lan-{year}", period=f"{year}-01")
        w.now = at(f"{year + 1}-01-02")
        last = close(w, f"{year}-12")
        ev.catch_up()
    assert last is not None
    return last


def proposal(decision: str, kind: str, **extra: str) -> dict[str, Any]:
    return {
        "decision": decision,
        "employee": LAN,
        "kind": kind,
        "grounds": ["2026-12", "2027-12"],
        "details": "Hai năm liên tiếp không hoàn thành nhiệm vụ",
        **extra,
    }


def test_an_hr_due_item_overdue_and_what_resolves_it(
    db_url: str, w: World, ev: Evaluations, http: Any
) -> None:
    raised = failing_years(w, ev)
    key = f"{LAN}/2027"
    item = ev.view.doc("hr_due", key)
    assert item is not None
    due = dt.datetime.fromisoformat(item["due"])
    # raised on 2 January 2028 (10:00 in Vietnam): 30 calendar days, 1 February is a Tuesday
    assert due == dt.datetime(2028, 2, 2, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert (item["open"], item["raised_by_seq"], item["decisions"]) == (True, raised.seq, [])
    assert item["resolved_by"] is None
    assert item["resolving_kinds"] == ["transfer", "demotion", "dismissal", "no_action"]
    # within its deadline: not overdue; past it: by how much
    assert hr_due_overdue(item, due - dt.timedelta(seconds=1)) is None
    assert http("hoa.hr", "/v1/hr-due")["items"][0]["overdue"] is None
    assert http("hoa.hr", "/v1/hr-due", overdue=True)["items"] == []

    w.now = due + dt.timedelta(days=2, hours=3)
    reward = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-r", "reward"))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None
    reward_at = w.fact_at(reward.seq).time
    assert item["decisions"] == [
        {
            "decision": "hd-r",
            "kind": "reward",
            "status": "proposed",
            "seq": reward.seq,
            "at": reward_at,
            "resolves": False,
        }
    ]
    assert (item["open"], item["resolved_by"], item["acted_on_by"]) == (True, None, [])
    late = {"due": item["due"], "as_of": reward_at, "by_seconds": 2 * 86400 + 3 * 3600}
    for who in ("hoa.hr", LAN, INSPECTOR):
        (seen,) = http(who, "/v1/hr-due", overdue=True)["items"]
        assert seen["overdue"] == {**late, "by_days": 2}, seen

    w.now += dt.timedelta(hours=1)
    dismissal = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-d", "dismissal"))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None
    dismissal_at = w.fact_at(dismissal.seq).time
    assert item["open"] is False and item["acted_on_by"] == ["hd-d"]
    assert item["resolved_by"] == {
        "decision": "hd-d",
        "kind": "dismissal",
        "seq": dismissal.seq,
        "at": dismissal_at,
    }
    assert [(d["decision"], d["seq"], d["resolves"]) for d in item["decisions"]] == [
        ("hd-r", reward.seq, False),
        ("hd-d", dismissal.seq, True),
    ]
    # resolved late: overdue as of the decision, whatever the clock says now
    w.now += dt.timedelta(days=30)
    (seen,) = http("hoa.hr", "/v1/hr-due", open=False)["items"]
    assert seen["overdue"] == {
        "due": item["due"],
        "as_of": dismissal_at,
        "by_seconds": 2 * 86400 + 4 * 3600,
        "by_days": 2,
    }

    # withdrawn, it acts on nothing: open again, until "no action, with reasons"
    w.do("hoa.hr", "hr.decision_withdrawn", {"decision": "hd-d", "reason": "xem xét lại"})
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["open"] is True and item["resolved_by"] is None
    assert item["decisions"][1]["status"] == "withdrawn" and not item["decisions"][1]["resolves"]
    reasons = "Đang điều trị bệnh dài ngày; đánh giá lại sau sáu tháng"
    none = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-n", "no_action", reasons=reasons))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["open"] is False
    assert item["resolved_by"] == {
        "decision": "hd-n",
        "kind": "no_action",
        "seq": none.seq,
        "at": w.fact_at(none.seq).time,
    }
    same_after_rebuild(db_url, ev)


def test_the_policy_names_the_kinds_that_resolve_it(w: World, ev: Evaluations) -> None:
    """KH-W1 publishes, for 2027, a pack whose ``resolving_kinds`` is ``["reward"]``: the
    2027 item is resolved by a reward and not by a dismissal."""
    document = shipped_policy("default")
    document.update(id="kh-w1-rewards", version=1, effective_from="2027-01-01")
    document["hr_decision"]["resolving_kinds"] = ["reward"]
    w.now = at("2026-01-03")
    w.do("admin", "policy.published", {"scope": "KH-W1", "document": document})
    failing_years(w, ev)
    key = f"{LAN}/2027"
    w.now = at("2028-01-10")
    dismissal = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-d", "dismissal"))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["resolving_kinds"] == ["reward"]
    assert item["open"] is True and item["decisions"][0]["seq"] == dismissal.seq
    assert item["decisions"][0]["resolves"] is False
    reward = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-r", "reward"))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["open"] is False
    assert item["resolved_by"]["seq"] == reward.seq and item["acted_on_by"] == ["hd-r"]


def test_a_pack_without_resolving_kinds_keeps_the_rule_before_it(
    db_url: str, w: World, ev: Evaluations
) -> None:
    """A log whose policy was published before ``hr_decision.resolving_kinds`` (KH-W1's pack
    for 2027 without the key) reads as it did: a reward proposal acts on the item (open
    false, resolved by it), and only a withdrawal reopens it."""
    document = shipped_policy("default")
    document.update(id="kh-w1-before", version=1, effective_from="2027-01-01")
    del document["hr_decision"]["resolving_kinds"]
    w.now = at("2026-01-03")
    w.do("admin", "policy.published", {"scope": "KH-W1", "document": document})
    failing_years(w, ev)
    key = f"{LAN}/2027"
    w.now = at("2028-01-10")
    reward = w.do("hoa.hr", "hr.decision_proposed", proposal("hd-r", "reward"))
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["resolving_kinds"] is None
    assert item["open"] is False and item["acted_on_by"] == ["hd-r"]
    assert item["resolved_by"]["seq"] == reward.seq
    assert item["decisions"][0]["resolves"] is True
    w.do("hoa.hr", "hr.decision_withdrawn", {"decision": "hd-r", "reason": "xem xét lại"})
    ev.catch_up()
    item = ev.view.doc("hr_due", key)
    assert item is not None and item["open"] is True and item["resolved_by"] is None
    same_after_rebuild(db_url, ev)
