"""``GET /v1/refusals`` and the journal's flag in ``GET /v1/flags``, on both backends.

Lan (an employee) tries to approve her own work over HTTP, again and again: each refusal is
a 403 naming ``separation.self_approval``, nothing is recorded, and each is journaled. The
inspector reads every refusal, paged newest first; Lan reads her own (and asking for
another's is a 403); her supervisor reads none of them. Once Lan has made the threshold's
count of attempts in one month, ``/v1/flags`` shows a flag from the journal that names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime, Settings
from ledger.config import parse_database
from ledger.home import LedgerHome
from ledger.journal import FLAG_KIND, SELF_APPROVAL, SELF_APPROVAL_ATTEMPTS
from tests.domain.world import LAN, World, assignment, at

INSPECTOR, SUPERVISOR, OTHER = "binh.insp", "tuan.sup", "mai.tran"
WHO = ("admin", INSPECTOR, SUPERVISOR, LAN, OTHER)


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, World, dict[str, str]]]:
    w = World(db_url)
    w.organise()
    w.employ(LAN)
    w.employ(OTHER)
    w.now = at("2026-03-02")
    w.do(SUPERVISOR, "work.assigned", assignment("i-1"))
    w.do(LAN, "work.declared", {"item": "i-1", "done_at": "2026-03-01T03:00:00Z"})
    settings = Settings(parse_database(db_url), LedgerHome(tmp_path / "no-home"), projections=False)
    app = create_app(settings, runtime=lambda s: Runtime.open(s, service=w.service))
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        tokens = {who: rt.principals.issue(who) for who in WHO}
        yield client, w, tokens
    w.service.close()


def get(client: TestClient, token: str, path: str, **query: Any) -> Any:
    response = client.get(path, params=query, headers={"Authorization": f"Bearer {token}"})
    return response


def attempt(client: TestClient, w: World, token: str) -> None:
    size = w.service.sealed.log_size()
    raw = w.sign(LAN, "work.approved", {"item": "i-1"})
    response = client.post(
        "/v1/work",
        content=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 403 and response.json()["rule"] == SELF_APPROVAL
    assert w.service.sealed.log_size() == size


def test_who_reads_the_refusals(api: tuple[TestClient, World, dict[str, str]]) -> None:
    client, w, tokens = api
    attempt(client, w, tokens[LAN])
    # another actor's refused envelope: Mai sends a fact signed by Lan (not hers to send)
    foreign = w.sign(LAN, "work.declared", {"item": "i-1", "done_at": "2026-03-01T04:00:00Z"})
    response = client.post(
        "/v1/work",
        content=foreign,
        headers={"Authorization": f"Bearer {tokens[OTHER]}", "Content-Type": "application/json"},
    )
    assert response.status_code == 403 and response.json()["rule"] == "principal.not_the_actor"
    w.refused(OTHER, "work.approved", {"item": "i-1"}, "role.missing")  # Mai's own attempt

    everything = get(client, tokens[INSPECTOR], "/v1/refusals").json()["items"]
    # Mai's sending Lan's envelope is refused by the API's screen: no attempt of Lan's, and
    # not journaled under her name
    assert [(r["actor"], r["rule"]) for r in everything] == [
        (OTHER, "role.missing"),
        (LAN, SELF_APPROVAL),
    ]
    assert all(r["fact_sha256"] and r["recorded_at"].startswith("2026-03-02") for r in everything)
    assert get(client, tokens["admin"], "/v1/refusals").json()["items"] == everything
    # filters
    mine = get(client, tokens[INSPECTOR], "/v1/refusals", actor=LAN, rule=SELF_APPROVAL).json()
    assert [r["id"] for r in mine["items"]] == [everything[1]["id"]]
    late = get(client, tokens[INSPECTOR], "/v1/refusals", since="2026-03-03T00:00:00Z").json()
    assert late["items"] == []
    # Lan reads her own, asked for or not; not Mai's
    for query in ({}, {"actor": LAN}):
        own = get(client, tokens[LAN], "/v1/refusals", **query).json()["items"]
        assert [r["id"] for r in own] == [r["id"] for r in everything if r["actor"] == LAN]
    refused = get(client, tokens[LAN], "/v1/refusals", actor=OTHER)
    assert refused.status_code == 403 and refused.json()["rule"] == "auth.out_of_scope"
    # her supervisor reads no one's refusals but his own (none)
    assert get(client, tokens[SUPERVISOR], "/v1/refusals").json()["items"] == []
    assert get(client, tokens[SUPERVISOR], "/v1/refusals", actor=LAN).status_code == 403


def test_paged_newest_first(api: tuple[TestClient, World, dict[str, str]]) -> None:
    client, w, tokens = api
    for _ in range(5):
        attempt(client, w, tokens[LAN])
    seen: list[int] = []
    page = get(client, tokens[INSPECTOR], "/v1/refusals", limit=2).json()
    while True:
        seen += [r["id"] for r in page["items"]]
        if "next" not in page:
            break
        response = client.get(page["next"], headers={"Authorization": f"Bearer {tokens[LAN]}"})
        page = response.json()
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5


def test_the_attempts_flag(api: tuple[TestClient, World, dict[str, str]]) -> None:
    client, w, tokens = api

    def journal_flags(who: str, **query: Any) -> list[dict[str, Any]]:
        items = get(client, tokens[who], "/v1/flags", **query).json()["items"]
        return [f for f in items if f.get("source") == "journal"]

    for _ in range(SELF_APPROVAL_ATTEMPTS - 1):
        attempt(client, w, tokens[LAN])
    assert journal_flags(INSPECTOR) == []
    attempt(client, w, tokens[LAN])
    [flag] = journal_flags(INSPECTOR)
    attempts = get(client, tokens[INSPECTOR], "/v1/refusals", rule=SELF_APPROVAL).json()["items"]
    assert flag["kind"] == FLAG_KIND and flag["subject"] == f"{LAN}/2026-03"
    assert flag["count"] == SELF_APPROVAL_ATTEMPTS and flag["facts"] == []
    assert [r["id"] for r in flag["refusals"]] == sorted(r["id"] for r in attempts)
    assert {r["fact_sha256"] for r in flag["refusals"]} == {r["fact_sha256"] for r in attempts}
    # shown to those who may read Lan, filtered like the projection's flags
    assert journal_flags(LAN) == [flag] and journal_flags(SUPERVISOR) == [flag]
    assert journal_flags(OTHER) == []
    assert journal_flags(INSPECTOR, kind=FLAG_KIND) == [flag]
    assert journal_flags(INSPECTOR, kind="bulk_approval") == []
    assert journal_flags(INSPECTOR, employee=OTHER) == []
    assert journal_flags(INSPECTOR, after="zzz") == []  # on the first page only


def _lan_moves_to_w2(api: tuple[TestClient, World, dict[str, str]]) -> Runtime:
    """Lan is transferred to KH-W2 on 1 April, whose supervisor vy.sup gets a token."""
    client, w, tokens = api
    move = {"employee": LAN, "unit": "KH-W2", "position": "officer", "since": "2026-04-01"}
    w.now = at("2026-04-02")
    w.do("hoa.hr", "employee.transferred", {**move, "reason": "luân chuyển"})
    w.person("vy.sup")
    w.grant("vy.sup", "supervisor", "KH-W2")
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    tokens["vy.sup"] = rt.principals.issue("vy.sup")
    return rt


def test_the_attempts_flag_is_read_for_its_period(
    api: tuple[TestClient, World, dict[str, str]],
) -> None:
    """Lan leaves the one-stop section for KH-W2 on 1 April and then tries to approve her
    own work: April's flag is read by KH-W2's supervisor, not by Tuấn, whose section she
    left (he read her until March), nor by Mai; Lan and the inspector read it."""
    client, w, tokens = api
    _lan_moves_to_w2(api)
    for _ in range(SELF_APPROVAL_ATTEMPTS):
        attempt(client, w, tokens[LAN])

    def journal_flags(who: str) -> list[str]:
        items = get(client, tokens[who], "/v1/flags", kind=FLAG_KIND).json()["items"]
        return [f["subject"] for f in items if f.get("source") == "journal"]

    april = [f"{LAN}/2026-04"]
    assert journal_flags(INSPECTOR) == april
    assert journal_flags(LAN) == april and journal_flags("vy.sup") == april
    assert journal_flags(SUPERVISOR) == [] and journal_flags(OTHER) == []


def test_every_flag_is_read_for_its_period(
    api: tuple[TestClient, World, dict[str, str]],
) -> None:
    """The projection's flags too are judged at their subject's month: Tuấn, who supervised
    Lan until March, reads her March flag and not her April one; KH-W2's supervisor the
    other way round. (Two flag documents written into the view by hand: this service runs
    no projection runner, and the scoping, not the flag's raising, is under test.)"""
    import json

    client, _, tokens = api
    rt = _lan_moves_to_w2(api)
    for month in ("2026-03", "2026-04"):
        doc = {"kind": "fast_approval", "subject": f"{LAN}/{month}", "facts": [1], "why": "t"}
        with rt.view._cursor(commit=True) as c:  # type: ignore[attr-defined]
            rt.view._exec(  # type: ignore[attr-defined]
                c,
                "INSERT INTO {s}kpi_view_docs (view, key, employee, agency, period, doc)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ("flag", f"fast_approval/{LAN}/{month}/1", LAN, None, month, json.dumps(doc)),
            )

    def flags(who: str) -> list[str]:
        items = get(client, tokens[who], "/v1/flags", kind="fast_approval").json()["items"]
        return [f["subject"] for f in items]

    assert flags(INSPECTOR) == [f"{LAN}/2026-03", f"{LAN}/2026-04"]
    assert flags(SUPERVISOR) == [f"{LAN}/2026-03"]
    assert flags("vy.sup") == [f"{LAN}/2026-04"]
