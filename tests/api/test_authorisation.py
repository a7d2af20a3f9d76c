"""Every role against every endpoint: who is let in, who is refused.

The principals of the standard world (``tests/domain/world.py``), each with a token: the
administrator, an HR officer and a reviewer over the province, the one-stop section's
supervisor, another agency's supervisor, the inspector, the one-stop system (integrator), Lan
(an employee of the section) and Mai (another employee). Lan's March is recorded, closed and
appealed, and a checkpoint is signed, so that every read has something to find.

Reads: each cell is the status expected (200 read, 403 refused; a list answers 200 and leaves
out what the caller may not see, checked separately). Writes: the API lets a fact through only
when the caller signed it; the domain's rules then decide by role and unit, and a refusal is a
403 naming the rule. The matrix covers an envelope signed by someone else (refused for every
role), an inspector's spot check and a supervisor's approval (each let through for that role
only, refused for every other one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime, Settings
from ledger.checkpoints import Checkpointer
from ledger.config import parse_database
from ledger.home import LedgerHome
from tests.domain.world import LAN, MARCH, World, assignment, at

ADMIN, HR, REVIEWER, SUPERVISOR, OTHER_SUPERVISOR = (
    "admin",
    "hoa.hr",
    "an.rev",
    "tuan.sup",
    "ha.sup",
)
INSPECTOR, SYSTEM, OTHER = "binh.insp", "oss.system", "mai.tran"
ROLES = (ADMIN, HR, REVIEWER, SUPERVISOR, OTHER_SUPERVISOR, INSPECTOR, SYSTEM, LAN, OTHER)
EVERYONE = set(ROLES)
LANS_READERS = {ADMIN, HR, REVIEWER, SUPERVISOR, INSPECTOR, LAN}
AGENCY_READERS = {ADMIN, HR, REVIEWER, INSPECTOR}
LOG_READERS = {ADMIN, INSPECTOR}
IN_THE_UNIT = {LAN, OTHER}  # each reads her own row of KH-W1's March (api/routes/views.py)

# (path, query, who may read); everyone else gets 403
READS: list[tuple[str, dict[str, Any], set[str]]] = [
    (f"/v1/scores/{LAN}/{MARCH}", {}, LANS_READERS),
    (f"/v1/scores/{LAN}/{MARCH}", {"as_of": "LAST"}, LANS_READERS),
    (f"/v1/scores/{LAN}/{MARCH}/diff", {"as_of": "LAST"}, LANS_READERS),
    (f"/v1/employees/{LAN}/scores", {}, LANS_READERS),
    (f"/v1/units/KH-W1/{MARCH}", {}, AGENCY_READERS | IN_THE_UNIT),
    (f"/v1/units/KH-W1/{MARCH}", {"policy": 1}, AGENCY_READERS | IN_THE_UNIT),  # replayed
    (f"/v1/units/KH-W1/{MARCH}/diff", {"as_of": "LAST"}, AGENCY_READERS | IN_THE_UNIT),
    (f"/v1/snapshots/KH-W1/{MARCH}", {}, AGENCY_READERS | IN_THE_UNIT),
    (f"/v1/appeals/{LAN}/ap-1", {}, LANS_READERS),
    ("/v1/appeals", {}, EVERYONE),
    ("/v1/flags", {}, EVERYONE),
    ("/v1/hr-due", {}, EVERYONE),
    ("/v1/findings", {}, EVERYONE),
    ("/v1/hr-decisions", {}, EVERYONE),
    ("/v1/refusals", {}, EVERYONE),  # a caller's own refused attempts, or all of them
    ("/v1/refusals", {"actor": LAN}, {ADMIN, INSPECTOR, LAN}),  # hers: not her readers'
    ("/v1/checkpoint", {}, EVERYONE),
    ("/v1/status", {}, EVERYONE),
    ("/v1/proofs/inclusion", {"index": 3, "size": 10}, EVERYONE),
    ("/v1/proofs/consistency", {"first": 3, "second": 10}, EVERYONE),
    ("/v1/receipts/5", {}, EVERYONE),
    ("/v1/entries", {"limit": 2}, LOG_READERS),
    ("/v1/entries/5", {}, LOG_READERS),  # a key registration: its signer is the administrator
    ("/v1/feed", {"limit": 2}, LOG_READERS),
    ("/v1/export", {}, LOG_READERS),
]
# what a load balancer asks without a token: it names no one
PUBLIC = ["/v1/health", "/v1/ready"]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, World, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("matrix")
    url = f"sqlite:///{folder / 'ledger.db'}"
    w = World(url)
    w.organise()
    for name in (LAN, OTHER):
        w.employ(name)
    w.person(OTHER_SUPERVISOR)
    w.grant(OTHER_SUPERVISOR, "supervisor", "KH-W2")
    w.now = at("2026-03-02")
    for item in ("lan-03-01", "lan-03-02"):
        w.do(SUPERVISOR, "work.assigned", assignment(item))
        w.do(LAN, "work.declared", {"item": item, "done_at": "2026-03-01T10:00:00Z"})
    w.do(SUPERVISOR, "work.approved", {"item": "lan-03-01"})
    w.do(SUPERVISOR, "work.assigned", assignment("mai-03-01", employee=OTHER))
    rejected = w.do(SUPERVISOR, "work.rejected", {"item": "lan-03-02", "reason": "thiếu"})
    w.now = at("2026-04-02")
    w.do(HR, "period.closed", {"agency": "KH-W1", "period": MARCH, "snapshot": "0" * 64})
    w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": [rejected.seq], "grounds": "g"})
    w.now = at("2026-04-03")
    w.do(SUPERVISOR, "work.assigned", assignment("lan-04-01", period="2026-04"))
    w.do(LAN, "work.declared", {"item": "lan-04-01", "done_at": "2026-04-03T01:00:00Z"})
    Checkpointer(w.service.sealed, w.log_key, folder / "state.json").checkpoint()
    settings = Settings(parse_database(url), LedgerHome(folder / "no-home"))
    app = create_app(settings, runtime=lambda s: Runtime.open(s, service=w.service))
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        tokens = {who: rt.principals.issue(who) for who in ROLES}
        assert rt.runner is not None and rt.runner.wait_for(w.service.sealed.log_size() - 1)
        yield client, w, tokens
    w.service.close()


@pytest.mark.parametrize("who", ROLES)
def test_reads(world: tuple[TestClient, World, dict[str, str]], who: str) -> None:
    client, _, tokens = world
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    got = {}
    last = str(world[1].service.sealed.log_size() - 1)
    for path, query, readers in READS:
        query = {k: (last if v == "LAST" else v) for k, v in query.items()}
        response = client.get(path, params=query, headers=headers)
        got[(path, tuple(query))] = response.status_code
        expected = 200 if who in readers else 403
        assert response.status_code == expected, (who, path, query, response.text[:300])
        if expected == 403:
            assert response.json()["rule"] in ("auth.out_of_scope", "auth.forbidden")
    # lists leave out what the caller may not read
    appeals = client.get("/v1/appeals", headers=headers).json()["items"]
    assert [a["key"] for a in appeals] == ([f"{LAN}/ap-1"] if who in LANS_READERS else [])


@pytest.mark.parametrize("who", sorted(IN_THE_UNIT))
def test_a_person_reads_her_own_row_and_no_one_elses_name(
    world: tuple[TestClient, World, dict[str, str]], who: str
) -> None:
    """Lan and Mai each read KH-W1's March unit view and snapshot: the distribution and the
    quota check as counts, and her own row only; an agency reader sees both rows."""
    client, _, tokens = world
    other = ({LAN, OTHER} - {who}).pop()
    for path in (f"/v1/units/KH-W1/{MARCH}", f"/v1/snapshots/KH-W1/{MARCH}"):
        full = client.get(path, headers={"Authorization": f"Bearer {tokens[HR]}"}).json()
        mine = client.get(path, headers={"Authorization": f"Bearer {tokens[who]}"}).json()
        assert mine["scope"] == "own row" and "scope" not in full
        rows = mine["results"] if "results" in mine else mine["published"]["results"]
        every = full["results"] if "results" in full else full["published"]["results"]
        assert [r["employee"] for r in rows] == [who]
        assert sorted(r["employee"] for r in every) == sorted([LAN, OTHER])
        assert other not in str(mine)
    unit = client.get(
        f"/v1/units/KH-W1/{MARCH}", headers={"Authorization": f"Bearer {tokens[who]}"}
    ).json()
    assert unit["count"] == 2 and sum(unit["distribution"].values()) == 2
    # no mean: with two rows, the mean and her own total give the other's; the cut-off stays
    assert "mean" not in unit
    [check] = unit["quota"]
    assert check["cut_off"] is None  # nobody holds excellent here
    assert (check["population"], check["allowed"], check["holders"]) == (0, 0, 0)
    assert (check["kept_count"], check["moved_to_good_count"]) == (0, 0)
    assert "kept" not in check and "moved_to_good" not in check


# (path, fact type, data, who may write it); the others get a 403 naming one of REFUSED
REFUSED = ("role.missing", "scope.outside", "separation.self_approval", "separation.own_work")
WRITES: list[tuple[str, str, dict[str, Any], set[str]]] = [
    ("/v1/work", "work.spot_checked", {"item": "lan-04-01", "result": "confirmed"}, {INSPECTOR}),
    ("/v1/work", "work.approved", {"item": "lan-04-01"}, {SUPERVISOR}),
]


@pytest.mark.parametrize("who", ROLES)
def test_writes(world: tuple[TestClient, World, dict[str, str]], who: str) -> None:
    client, w, tokens = world
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    w.now = at("2026-04-10")
    size = w.service.sealed.log_size()
    # an envelope signed by someone else is refused, whatever the role
    other = LAN if who != LAN else SUPERVISOR
    foreign = w.sign(
        other, "work.declared", {"item": "lan-03-01", "done_at": "2026-03-19T10:00:00Z"}
    )
    response = client.post(
        "/v1/work", content=foreign, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 403 and response.json()["rule"] == "principal.not_the_actor"
    # a supervisor's approval and an inspector's spot check: only theirs get past the rules
    for path, fact_type, data, writers in WRITES:
        raw = w.sign(who, fact_type, data)
        response = client.post(
            path, content=raw, headers={**headers, "Content-Type": "application/json"}
        )
        if who in writers:
            assert response.status_code == 201, (who, fact_type, response.text)
        else:
            assert response.status_code == 403, (who, fact_type, response.text)
            assert response.json()["rule"] in REFUSED, (who, fact_type, response.text)
    assert w.service.sealed.log_size() - size == (1 if who in (SUPERVISOR, INSPECTOR) else 0)


def test_without_a_token_nothing_is_open(world: tuple[TestClient, World, dict[str, str]]) -> None:
    client, _, _ = world
    for path, query, _ in READS:
        response = client.get(path, params=query)
        assert response.status_code == 401, path
    assert client.post("/v1/work", json={}).status_code == 401
    assert client.get("/v1/openapi.json").status_code == 200  # the contract is public
    for path in PUBLIC:
        assert client.get(path).status_code == 200, path


def test_the_matrix_covers_every_read_endpoint(
    world: tuple[TestClient, World, dict[str, str]],
) -> None:
    client, _, _ = world
    spec = client.get("/v1/openapi.json").json()
    gets = {p for p, ops in spec["paths"].items() if "get" in ops}
    covered = {path for path, _, _ in READS} | set(PUBLIC)
    templated = {
        p.replace("{employee}", LAN)
        .replace("{period}", MARCH)
        .replace("{agency}", "KH-W1")
        .replace("{appellant}", LAN)
        .replace("{appeal}", "ap-1")
        .replace("{seq}", "5")
        for p in gets
    }
    assert templated == covered
