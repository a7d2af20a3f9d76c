"""The HTTP API in process (FastAPI's TestClient), on both backends, with the real runtime:
the ledger service, the token table, the evaluation views and their runner.

The world is the standard organisation of ``tests/domain/world.py`` (Lan in the one-stop
section, Tuấn its supervisor, Hoa and Minh in HR, An the reviewer, Bình the inspector, the
one-stop system); each principal gets a token and signs its own facts.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import MAX_BATCH, Runtime, Settings
from ledger.checkpoints import Checkpointer
from ledger.config import parse_database
from ledger.home import LedgerHome
from signing.checkpoint import log_verifier_keys, verify_checkpoint
from signing.merkle import leaf_hash, verify_inclusion
from signing.receipt import TlogProof
from tests.domain.world import LAN, MARCH, World, assignment, at

PEOPLE = (LAN, "mai.tran", "tuan.sup", "hoa.hr", "minh.hr", "binh.insp", "oss.system")


class Api:
    """A client, the world behind it, and a token per principal."""

    def __init__(self, client: TestClient, w: World, runtime: Runtime) -> None:
        self.client = client
        self.w = w
        self.rt = runtime
        self.tokens = {p: runtime.principals.issue(p) for p in PEOPLE}

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def post(self, path: str, who: str, body: Any) -> Any:
        return self.client.post(path, headers=self.auth(who), json=body)

    def get(self, path: str, who: str, **params: Any) -> Any:
        return self.client.get(path, headers=self.auth(who), params=params)

    def envelope(self, who: str, fact_type: str, data: dict[str, Any]) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(self.w.sign(who, fact_type, data))
        return raw

    def write(self, path: str, who: str, fact_type: str, data: dict[str, Any]) -> Any:
        return self.post(path, who, self.envelope(who, fact_type, data))

    def size(self) -> int:
        return self.w.service.sealed.log_size()

    def caught_up(self) -> None:
        assert self.rt.runner is not None
        assert self.rt.runner.wait_for(self.size() - 1, timeout=20)


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    w = World(db_url)
    w.organise()
    w.employ(LAN)
    w.employ("mai.tran")
    settings = Settings(parse_database(db_url), LedgerHome(tmp_path / "no-home"), max_body=200_000)
    app = create_app(settings, runtime=lambda s: Runtime.open(s, service=w.service))
    with TestClient(app) as client:
        yield Api(client, w, app.state.runtime)
    w.service.close()


def problem(response: Any, status: int, rule: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = response.json()
    assert doc["rule"] == rule and doc["type"] == f"urn:kpi-ledger:problem:{rule}", doc
    assert doc["status"] == status and doc["title"] and doc["detail"]
    return doc


# -- authentication --------------------------------------------------------------------------


def test_a_token_is_needed_and_must_be_in_force(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        response = api.client.get("/v1/checkpoint", headers=headers)
        doc = problem(response, 401, response.json()["rule"])
        assert doc["rule"] in ("auth.missing_token", "auth.invalid_token")
        assert response.headers["www-authenticate"] == "Bearer"
    assert api.rt.principals.revoke(LAN)
    problem(api.get("/v1/checkpoint", LAN), 401, "auth.invalid_token")
    # a new token replaces the old one
    old = api.tokens["tuan.sup"]
    api.tokens["tuan.sup"] = api.rt.principals.issue("tuan.sup")
    assert (
        api.client.get("/v1/checkpoint", headers={"Authorization": f"Bearer {old}"}).status_code
        == 401
    )
    assert api.get("/v1/checkpoint", "tuan.sup").status_code == 404  # in, but nothing signed yet


# -- writes ----------------------------------------------------------------------------------


def test_a_write_lands_once_and_answers_its_position(api: Api) -> None:
    api.w.now = at("2026-03-02")
    envelope = api.envelope("tuan.sup", "work.assigned", assignment("lan-03-01"))
    size = api.size()
    first = api.post("/v1/work", "tuan.sup", envelope)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["seq"], body["type"], body["duplicate"]) == (size, "work.assigned", False)
    assert body["receipt"] == f"/v1/receipts/{size}"
    again = api.post("/v1/work", "tuan.sup", envelope)  # the same signed envelope
    assert again.status_code == 200 and again.json() == {**body, "duplicate": True}
    assert api.size() == size + 1


def test_refused_writes_record_nothing(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assigned = api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01"))
    assert assigned.status_code == 201
    declared = api.write(
        "/v1/work", LAN, "work.declared", {"item": "lan-03-01", "done_at": "2026-03-01T10:00:00Z"}
    )
    assert declared.status_code == 201, declared.text
    size = api.size()
    approve = api.envelope("tuan.sup", "work.approved", {"item": "lan-03-01"})
    # the wrong family's endpoint
    problem(api.post("/v1/appeals", "tuan.sup", approve), 422, "request.wrong_endpoint")
    # signed by Tuấn, sent with Lan's token
    problem(api.post("/v1/work", LAN, approve), 403, "principal.not_the_actor")
    # Lan approving her own work: the domain's rule
    own = api.envelope(LAN, "work.approved", {"item": "lan-03-01"})
    problem(api.post("/v1/work", LAN, own), 403, "separation.self_approval")
    # a signature that does not match
    forged = dict(
        approve,
        signatures=[dict(approve["signatures"][0], sig=base64.b64encode(b"x" * 64).decode())],
    )
    problem(api.post("/v1/work", "tuan.sup", forged), 422, "signature.invalid")
    # shapes that are not envelopes at all
    for body in ({}, {"payload": 1}, [], {**approve, "extra": 1}, {**approve, "signatures": []}):
        problem(api.post("/v1/work", "tuan.sup", body), 422, "request.invalid")
    raw = api.client.post(
        "/v1/work",
        headers={**api.auth("tuan.sup"), "content-type": "application/json"},
        content=b"{not json",
    )
    problem(raw, 422, "request.invalid")
    # a body above the limit
    big = api.client.post(
        "/v1/work",
        headers={**api.auth("tuan.sup"), "content-type": "application/json"},
        content=b"[" + b" " * 300_000 + b"]",
    )
    problem(big, 413, "request.too_large")
    assert api.size() == size
    ok = api.post("/v1/work", "tuan.sup", approve)
    assert ok.status_code == 201 and ok.json()["seq"] == size


def test_a_batch_answers_each_envelope_on_its_own(api: Api) -> None:
    api.w.now = at("2026-03-02")
    items = [f"lan-03-{i:02d}" for i in range(5)]
    envelopes = [api.envelope("tuan.sup", "work.assigned", assignment(i)) for i in items]
    envelopes.insert(2, api.envelope("tuan.sup", "work.approved", {"item": "ghost"}))  # refused
    envelopes.append(envelopes[0])  # the same envelope twice in one batch
    envelopes.append(
        api.envelope(LAN, "work.declared", {"item": items[0], "done_at": "2026-03-01T10:00:00Z"})
    )
    size = api.size()
    response = api.post("/v1/batch", "tuan.sup", {"envelopes": envelopes})
    assert response.status_code == 200, response.text
    out = response.json()
    statuses = [r["status"] for r in out["results"]]
    assert statuses[:2] == [201, 201] and statuses[3:6] == [201, 201, 201]
    assert out["results"][2]["problem"]["rule"] == "reference.unknown"
    assert statuses[6] == 200 and out["results"][6]["accepted"]["seq"] == size
    assert out["results"][7]["problem"]["rule"] == "principal.not_the_actor"
    assert (out["accepted"], out["refused"]) == (6, 2)
    assert [r["accepted"]["seq"] for r in out["results"] if r["status"] == 201] == list(
        range(size, size + 5)
    )
    assert api.size() == size + 5
    too_many = {"envelopes": [envelopes[0]] * (MAX_BATCH + 1)}
    assert api.post("/v1/batch", "tuan.sup", too_many).status_code in (413, 422)


# -- audit -----------------------------------------------------------------------------------


def test_checkpoints_receipts_and_proofs(api: Api, tmp_path: Path) -> None:
    problem(api.get("/v1/checkpoint", LAN), 404, "log.no_checkpoint")
    problem(api.get("/v1/receipts/3", LAN), 404, "log.not_sealed")
    signer = Checkpointer(api.w.service.sealed, api.w.log_key, tmp_path / "state.json")
    signed = signer.checkpoint()
    note = api.get("/v1/checkpoint", LAN)
    assert note.status_code == 200 and note.text == signed.note
    keys = log_verifier_keys(api.w.log_key)
    checkpoint = verify_checkpoint(note.text, keys).checkpoint
    # a receipt verifies offline against the entry's exact bytes
    receipt = api.get("/v1/receipts/3", LAN)
    assert receipt.status_code == 200
    parsed = TlogProof.parse(receipt.text)
    sealed = verify_checkpoint(parsed.checkpoint, keys).checkpoint
    entry = api.w.log_bytes()[3]
    verify_inclusion(leaf_hash(entry), 3, sealed.size, parsed.proof, sealed.root)
    # proofs
    proof = api.get("/v1/proofs/inclusion", "binh.insp", index=3, size=checkpoint.size).json()
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    assert base64.b64decode(proof["root"]) == checkpoint.root
    verify_inclusion(leaf_hash(entry), 3, checkpoint.size, hashes, checkpoint.root)
    cons = api.get("/v1/proofs/consistency", LAN, first=5, second=checkpoint.size)
    assert cons.status_code == 200 and len(cons.json()["hashes"]) > 0
    problem(api.get("/v1/proofs/inclusion", LAN, index=3, size=10**9), 404, "log.size_unknown")
    problem(api.get("/v1/proofs/inclusion", LAN, index=-1, size=5), 422, "request.invalid")
    problem(api.get("/v1/receipts/99999", LAN), 404, "log.not_sealed")


def test_status_says_what_the_views_reflect(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assert (
        api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01")).status_code
        == 201
    )
    api.caught_up()
    status = api.get("/v1/status", LAN).json()
    assert status["log_size"] == api.size() and status["checkpoint_size"] == 0
    assert status["views"] == {"seq": api.size() - 1, "current": True, "state": "current"}
    assert status["jobs"]["projections"]["state"] == "ok"
    assert status["checkpointer"] == "off"  # this test's service has no ledger home


def test_a_signer_reads_its_own_entry(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assigned = api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01"))
    seq = assigned.json()["seq"]
    own = api.get(f"/v1/entries/{seq}", "tuan.sup")
    assert own.status_code == 200 and own.content == api.w.log_bytes()[seq]
    assert api.get(f"/v1/entries/{seq}", "binh.insp").content == own.content
    problem(api.get(f"/v1/entries/{seq}", LAN), 403, "auth.forbidden")
    problem(api.get(f"/v1/entries/{seq + 100}", "tuan.sup"), 404, "log.size_unknown")


def test_entries_are_for_inspectors_with_their_exact_bytes(api: Api) -> None:
    problem(api.get("/v1/entries", LAN), 403, "auth.forbidden")
    response = api.get("/v1/entries", "binh.insp", start=2, limit=3)
    assert response.status_code == 200
    lines = response.content.splitlines()
    assert lines == [api.w.log_bytes()[i] for i in (2, 3, 4)]
    assert response.headers["link"] == '</v1/entries?start=5&limit=3>; rel="next"'
    assert int(response.headers["x-log-size"]) == api.size()


# -- reading scores --------------------------------------------------------------------------


def test_scores_are_read_by_whom_the_organisation_allows(api: Api) -> None:
    api.w.now = at("2026-03-02")
    for item in ("lan-03-01", "lan-03-02"):
        assert (
            api.write("/v1/work", "tuan.sup", "work.assigned", assignment(item)).status_code == 201
        )
        assert (
            api.write(
                "/v1/work", LAN, "work.declared", {"item": item, "done_at": "2026-03-01T10:00:00Z"}
            ).status_code
            == 201
        )
    approved = api.write("/v1/work", "tuan.sup", "work.approved", {"item": "lan-03-01"})
    assert approved.status_code == 201
    api.caught_up()
    path = f"/v1/scores/{LAN}/{MARCH}"
    for who in (LAN, "tuan.sup", "hoa.hr", "binh.insp"):
        response = api.get(path, who)
        assert response.status_code == 200, (who, response.text)
        doc = response.json()
        assert (doc["employee"], doc["period"], doc["source"]) == (LAN, MARCH, "views")
        assert doc["Q"] == "50" and any(
            line["seq"] == approved.json()["seq"] for line in doc["trace"]
        )
    for who in ("mai.tran", "oss.system"):
        problem(api.get(path, who), 403, "auth.out_of_scope")
    # as it stood before the approval, recomputed from the log
    before = api.get(path, LAN, as_of=str(approved.json()["seq"] - 1), trace="false").json()
    assert (before["Q"], before["source"]) == ("0", "log") and "trace" not in before
    diff = api.get(f"{path}/diff", "hoa.hr", as_of=str(approved.json()["seq"] - 1)).json()
    assert {c["what"] for c in diff["diff"]["changes"]} >= {"Q", "total"}
    history = api.get(f"/v1/employees/{LAN}/scores", LAN).json()
    assert [p["period"] for p in history["periods"]] == [MARCH]
    problem(api.get(f"/v1/scores/{LAN}/2026-13", LAN), 422, "request.invalid")
    problem(api.get(f"/v1/scores/{LAN}/2026-04", LAN), 404, "score.not_found")
    problem(api.get(path, LAN, as_of="tomorrow"), 422, "request.invalid")


def test_units_appeals_and_flags(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assert (
        api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01")).status_code
        == 201
    )
    api.w.now = at("2026-03-10")
    declared = {"item": "lan-03-01", "done_at": "2026-03-09T10:00:00Z"}
    assert api.write("/v1/work", LAN, "work.declared", declared).status_code == 201
    rejected = api.write(
        "/v1/work", "tuan.sup", "work.rejected", {"item": "lan-03-01", "reason": "thiếu hồ sơ"}
    )
    assert rejected.status_code == 201
    seq = rejected.json()["seq"]
    # a second item approved the second it was declared: a fast-approval flag
    assert (
        api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-02")).status_code
        == 201
    )
    assert (
        api.write("/v1/work", LAN, "work.declared", {**declared, "item": "lan-03-02"}).status_code
        == 201
    )
    fast = api.write("/v1/work", "tuan.sup", "work.approved", {"item": "lan-03-02"})
    assert fast.status_code == 201
    filed = api.write(
        "/v1/appeals", LAN, "appeal.filed", {"appeal": "ap-1", "contested": [seq], "grounds": "g"}
    )
    assert filed.status_code == 201, filed.text
    api.w.now = at("2026-04-02")
    closed = {"agency": "KH-W1", "period": MARCH, "snapshot": "0" * 64}
    assert api.write("/v1/periods", "hoa.hr", "period.closed", closed).status_code == 201
    api.caught_up()
    # the appeal: Lan's own, HR's and the inspector's; not Mai's; with the facts it cites
    for who in (LAN, "hoa.hr", "binh.insp"):
        listed = api.get("/v1/appeals", who, open="true").json()
        assert [i["key"] for i in listed["items"]] == [f"{LAN}/ap-1"], who
    assert api.get("/v1/appeals", "mai.tran").json()["items"] == []
    one = api.get(f"/v1/appeals/{LAN}/ap-1", LAN).json()
    assert one["open"] and one["answer_due"]
    cited = {c["seq"]: c for c in one["cited"]}
    assert cited[seq]["type"] == "work.rejected" and cited[seq]["actor"] == "tuan.sup"
    assert cited[filed.json()["seq"]]["type"] == "appeal.filed"
    problem(api.get(f"/v1/appeals/{LAN}/ap-1", "mai.tran"), 403, "auth.out_of_scope")
    problem(api.get(f"/v1/appeals/{LAN}/ap-9", LAN), 404, "view.not_found")
    # the unit view and the close's snapshot: HR and the supervisor's agency; Lan her own
    # row; Mai, who has none, nothing
    unit = api.get(f"/v1/units/KH-W1/{MARCH}", "hoa.hr").json()
    assert [r["employee"] for r in unit["results"]] == [LAN]
    snapshot = api.get(f"/v1/snapshots/KH-W1/{MARCH}", "binh.insp").json()
    assert snapshot["recorded"] == "0" * 64 and snapshot["matches"] is False
    assert api.get(f"/v1/units/KH-W1/{MARCH}", LAN).json()["scope"] == "own row"
    problem(api.get(f"/v1/units/KH-W1/{MARCH}", "mai.tran"), 403, "auth.out_of_scope")
    problem(api.get(f"/v1/snapshots/KH-W1/{MARCH}", "mai.tran"), 403, "auth.out_of_scope")
    problem(api.get(f"/v1/units/KH-W2/{MARCH}", "hoa.hr"), 404, "view.not_found")
    # flags: the fast approval, with its facts; for Lan and the inspector, not for Mai
    for who in (LAN, "binh.insp"):
        items = api.get("/v1/flags", who, kind="fast_approval").json()["items"]
        assert [(i["kind"], i["subject"], i["facts"][-1]) for i in items] == [
            ("fast_approval", f"{LAN}/{MARCH}", fast.json()["seq"])
        ], who
    assert api.get("/v1/flags", "mai.tran").json()["items"] == []
    assert api.get("/v1/flags", "binh.insp", kind="bulk_approval").json()["items"] == []
    problem(api.get("/v1/flags", "binh.insp", limit=500), 422, "request.invalid")


def test_the_feed_streams_entries_and_resumes(api: Api) -> None:
    log = api.w.log_bytes()
    problem(api.get("/v1/feed", LAN, limit=1), 403, "auth.forbidden")
    with api.client.stream(
        "GET", "/v1/feed", headers=api.auth("binh.insp"), params={"from": 2, "limit": 3}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = b"".join(response.iter_bytes())
    events = [e for e in text.split(b"\n\n") if e]
    assert events == [b"id: %d\nevent: entry\ndata: %s" % (i, log[i]) for i in (2, 3, 4)]
    resumed = api.client.get(
        "/v1/feed", headers={**api.auth("binh.insp"), "Last-Event-ID": "4"}, params={"limit": 1}
    )
    assert resumed.content == b"id: 5\nevent: entry\ndata: %s\n\n" % log[5]


def test_the_export_bundle_verifies_offline(api: Api, tmp_path: Path) -> None:
    import tarfile

    from signing.bundle import ExportSource
    from signing.verify import verify

    Checkpointer(api.w.service.sealed, api.w.log_key, tmp_path / "state.json").checkpoint()
    problem(api.get("/v1/export", "tuan.sup"), 403, "auth.forbidden")
    response = api.get("/v1/export", "binh.insp")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(response.content)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "bundle", filter="data")
    report = verify(ExportSource(tmp_path / "bundle"), log_verifier_keys(api.w.log_key), workers=1)
    assert report.ok and report.size == api.size(), report.problems


def test_an_inspectors_findings(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assigned = api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01"))
    about_lan = {
        "finding": "tt-1",
        "employee": LAN,
        "period": MARCH,
        "facts": [assigned.json()["seq"]],
        "severity": "minor",
        "summary": "thiếu minh chứng",
    }
    about_unit = {"finding": "tt-2", "unit": "KH-W1", "severity": "observation", "summary": "s"}
    for data in (about_lan, about_unit):
        response = api.write("/v1/inspections", "binh.insp", "inspection.finding_recorded", data)
        assert response.status_code == 201, response.text
    refused = api.write(
        "/v1/inspections",
        "tuan.sup",
        "inspection.finding_recorded",
        {**about_lan, "finding": "tt-3"},
    )
    problem(refused, 403, "role.missing")
    api.caught_up()
    seen = {
        who: [i["finding"] for i in api.get("/v1/findings", who).json()["items"]] for who in PEOPLE
    }
    assert seen["binh.insp"] == ["tt-1", "tt-2"] and seen["hoa.hr"] == ["tt-1", "tt-2"]
    assert seen[LAN] == ["tt-1"] and seen["tuan.sup"] == ["tt-1"]  # a section, not the ward
    assert seen["mai.tran"] == [] and seen["oss.system"] == []
    lan = api.get("/v1/findings", LAN, employee=LAN).json()["items"][0]
    assert (lan["facts"], lan["by"], lan["severity"]) == (
        [assigned.json()["seq"]],
        "binh.insp",
        "minor",
    )


def test_hr_decisions_with_the_closes_they_rest_on(api: Api) -> None:
    api.w.now = at("2026-03-02")
    assert (
        api.write("/v1/work", "tuan.sup", "work.assigned", assignment("lan-03-01")).status_code
        == 201
    )
    api.w.now = at("2026-04-02")
    close = api.write(
        "/v1/periods",
        "hoa.hr",
        "period.closed",
        {"agency": "KH-W1", "period": MARCH, "snapshot": "0" * 64},
    )
    assert close.status_code == 201
    proposal = {
        "decision": "qd-1",
        "employee": LAN,
        "kind": "reward",
        "grounds": [MARCH],
        "details": "khen thưởng",
    }
    proposed = api.write("/v1/hr-decisions", "hoa.hr", "hr.decision_proposed", proposal)
    assert proposed.status_code == 201, proposed.text
    issued = api.write("/v1/hr-decisions", "minh.hr", "hr.decision_issued", {"decision": "qd-1"})
    assert issued.status_code == 201, issued.text
    api.caught_up()
    [doc] = api.get("/v1/hr-decisions", LAN).json()["items"]
    assert (doc["decision"], doc["status"], doc["kind"]) == ("qd-1", "issued", "reward")
    assert doc["grounds"] == [
        {"period": MARCH, "agency": "KH-W1", "close_seq": close.json()["seq"], "snapshot": "0" * 64}
    ]
    assert [(a["type"], a["seq"]) for a in doc["acts"]] == [
        ("hr.decision_proposed", proposed.json()["seq"]),
        ("hr.decision_issued", issued.json()["seq"]),
    ]
    assert api.get("/v1/hr-decisions", "mai.tran").json()["items"] == []


def test_a_person_demoted_by_the_quota_sees_her_published_grade(api: Api) -> None:
    """Lan (95) and Mai (93) are both excellent on points; in a group of two the quota allows
    none (0.2 × 2 < 1), so both are published good. Lan's own score, list and trace say so,
    with the reading, her rank (1 of 2) and the population (2), and the close she was
    published in; she reads her own row of the unit view and the snapshot, not Mai's."""
    from projections.engine import next_close_snapshot, snapshot_hash
    from tests.projections.test_views import month_for

    month_for(api.w, LAN, MARCH, "95")
    month_for(api.w, "mai.tran", MARCH, "93")
    api.caught_up()
    api.w.now = at("2026-04-02")
    expected = snapshot_hash(next_close_snapshot(api.rt.view, "KH-W1", MARCH))
    closed = api.w.do(
        "hoa.hr", "period.closed", {"agency": "KH-W1", "period": MARCH, "snapshot": expected}
    )
    api.caught_up()
    score = api.get(f"/v1/scores/{LAN}/{MARCH}", LAN).json()
    assert (score["total"], score["grade"], score["overrides"]) == ("95", "excellent", [])
    pub = score["published"]
    assert (pub["grade"], pub["score_grade"], pub["moved_by_quota"]) == ("good", "excellent", True)
    quota = pub["quota"]
    assert quota["reading"] == "fixed_point"
    assert (quota["population"], quota["allowed"], quota["holders"]) == (2, 0, 2)
    assert (quota["rank"], quota["kept"], quota["moved"]) == (1, False, True)
    assert quota["cut_off"] is None
    assert quota["group"] == {"agency": "KH-W1", "task_group": "B"}
    snap = pub["snapshot"]
    assert (snap["close_seq"], snap["grade"], snap["total"]) == (closed.seq, "good", "95")
    assert snap["recorded"] == expected and snap["matches"] is True
    assert snap["set_aside"] is False
    *_, quota_line, close_line = score["trace"]
    assert quota_line["subject"] == "quota" and quota_line["seq"] is None
    assert quota_line["effect"] == (
        "quota (fixed_point): rank 1 of 2 holding it, 0 allowed in a population of 2:"
        " moved from excellent to good"
    )
    assert (close_line["seq"], close_line["fact"]) == (closed.seq, "period.closed")
    assert close_line["effect"] == "published at the close: good (total 95.00)"
    listed = api.get(f"/v1/employees/{LAN}/scores", LAN).json()["periods"]
    assert [p["published"]["grade"] for p in listed] == ["good"]
    # her own row of the unit view and the snapshot: no one else's name
    unit = api.get(f"/v1/units/KH-W1/{MARCH}", LAN)
    assert unit.status_code == 200
    mine = unit.json()
    assert [r["employee"] for r in mine["results"]] == [LAN] and "mai.tran" not in unit.text
    assert mine["results"][0]["grade"] == "good" and mine["results"][0]["rank"] == 1
    assert mine["distribution"] == {"excellent": 0, "good": 2, "completed": 0, "fails": 0}
    assert mine["quota"][0]["moved_to_good_count"] == 2
    snapshot = api.get(f"/v1/snapshots/KH-W1/{MARCH}", LAN)
    assert snapshot.status_code == 200 and "mai.tran" not in snapshot.text
    assert snapshot.json()["published"]["results"] == [
        {
            "employee": LAN,
            "total": "95",
            "points_grade": "excellent",
            "grade": "good",
            "policy": "vn-decree-335-2025@1",
            "catalogue": 1,
        }
    ]
    # a replayed answer carries no published side (the quota is the unit's)
    replayed = api.get(f"/v1/scores/{LAN}/{MARCH}", LAN, as_of=str(closed.seq)).json()
    assert "published" not in replayed


def test_a_unit_replayed_under_another_policy_keeps_the_reading_rules(api: Api) -> None:
    """Lan (95) and Mai (93), both excellent on points: in force, the fixed point allows none
    of two; under version 2 (population reading, 0.5: floor(0.5 × 2) = 1) Lan keeps
    excellent. HR reads the whole replayed view and the difference; Lan her own row of both;
    Tuấn (supervisor of the section, not of the agency), who has no row, nothing. Replays
    write nothing."""
    from tests.projections.test_views import month_for, policy_v2

    month_for(api.w, LAN, MARCH, "95")
    lan_done = api.size() - 1
    month_for(api.w, "mai.tran", MARCH, "93")
    api.w.do("admin", "policy.published", {"scope": "KH", "document": policy_v2()})
    api.caught_up()
    path = f"/v1/units/KH-W1/{MARCH}"
    stored = api.get(path, "hoa.hr").json()
    assert "source" not in stored and stored["quota"][0]["allowed"] == 0
    other = api.get(path, "hoa.hr", policy=2).json()
    assert (other["source"], other["policy"]) == ("log", "vn-decree-335-2025@2")
    [check] = other["quota"]
    assert (check["reading"], check["population"], check["allowed"]) == ("population", 2, 1)
    assert (check["kept"], check["moved_to_good"], check["cut_off"]) == ([LAN], ["mai.tran"], "95")
    assert {r["employee"]: r["grade"] for r in other["results"]} == {
        LAN: "excellent",
        "mai.tran": "good",
    }
    mine = api.get(path, LAN, policy=2)
    assert mine.status_code == 200 and "mai.tran" not in mine.text
    assert mine.json()["scope"] == "own row" and mine.json()["results"][0]["grade"] == "excellent"
    assert mine.json()["quota"][0]["kept_count"] == 1
    # Mai's total (93) does not follow from what Lan reads: no mean; the cut-off is Lan's own
    assert "mean" not in mine.json() and mine.json()["quota"][0]["cut_off"] == "95"
    assert '"93"' not in mine.text
    problem(api.get(path, "tuan.sup", policy=2), 403, "auth.out_of_scope")
    # the difference, v2 (then) against now
    answer = api.get(path + "/diff", "hoa.hr", policy=2).json()
    rows = {r["employee"]: r for r in answer["diff"]["rows"]}
    assert (rows[LAN]["before"]["grade"], rows[LAN]["after"]["grade"]) == ("excellent", "good")
    assert rows[LAN]["changed"] == ["grade", "policy"]
    [side] = answer["diff"]["quota"]
    assert (side["before"]["reading"], side["after"]["reading"]) == ("population", "fixed_point")
    assert (side["before"]["allowed"], side["after"]["allowed"]) == (1, 0)
    assert (side["before"]["cut_off"], side["after"]["cut_off"]) == ("95", None)
    own = api.get(path + "/diff", LAN, policy=2)
    assert own.status_code == 200 and "mai.tran" not in own.text
    assert [r["employee"] for r in own.json()["diff"]["rows"]] == [LAN]
    assert "mean" not in own.json()["then"] and "mean" not in own.json()["diff"]
    [own_side] = own.json()["diff"]["quota"]
    assert (own_side["before"]["cut_off"], own_side["after"]["cut_off"]) == ("95", None)
    assert own_side["changed"] is True  # the reading and allowed differ
    assert '"93"' not in own.text
    problem(api.get(path + "/diff", "tuan.sup", policy=2), 403, "auth.out_of_scope")
    # as of Lan's last fact: Mai was not scored yet; in the diff, her row appears
    then = api.get(path + "/diff", "hoa.hr", as_of=str(lan_done)).json()
    assert [r["employee"] for r in then["then"]["results"]] == [LAN]
    mai = next(r for r in then["diff"]["rows"] if r["employee"] == "mai.tran")
    assert (mai["before"], mai["after"]["total"], mai["changed"]) == (None, "93", ["row"])
    # Mai has no row as of then: her own-row reading is refused
    problem(api.get(path, "mai.tran", as_of=str(lan_done)), 403, "auth.out_of_scope")
    problem(api.get(path, "hoa.hr", policy=7), 404, "policy.not_found")
    problem(api.get(path, "hoa.hr", as_of="yesterday"), 422, "request.invalid")
    problem(api.get(path + "/diff", "hoa.hr"), 422, "request.invalid")
    problem(api.get(f"/v1/units/KH-W2/{MARCH}", "hoa.hr", policy=2), 404, "view.not_found")
    # nothing written
    assert api.get(path, "hoa.hr").json() == stored


def test_a_replayed_unit_view_is_refused_before_anything_is_replayed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever may not read KH-W1's views and was not posted in it in March (an integrating
    system, an employee of another agency, a supervisor of a section with no row) is refused
    (403) for a replayed unit view and its diff before anything is replayed: not the 404 of
    an unknown policy version, not the 422 of a position past the log, and no replay is made
    (a query malformed by its pattern is still 422: that says nothing of the agency)."""
    from tests.projections.test_views import month_for

    month_for(api.w, LAN, MARCH, "95")
    api.w.employ("khoa.le", unit="KH-W2")
    api.tokens["khoa.le"] = api.rt.principals.issue("khoa.le")
    api.caught_up()

    replays: list[str] = []

    def no_replay(*args: Any, **kwargs: Any) -> None:
        replays.append("replayed")
        raise RuntimeError("replayed before the access check")

    monkeypatch.setattr("api.routes.views.Replay", no_replay)
    path = f"/v1/units/KH-W1/{MARCH}"
    for who in ("oss.system", "khoa.le", "tuan.sup"):
        for query in ({"policy": 7}, {"policy": 2}, {"as_of": "999999999"}, {"as_of": "1"}):
            problem(api.get(path, who, **query), 403, "auth.out_of_scope")
            problem(api.get(path + "/diff", who, **query), 403, "auth.out_of_scope")
    assert replays == []
    # an agency reader, and a person posted in the agency then, do reach the replay
    for who, where in (("hoa.hr", path), (LAN, path + "/diff")):
        replays.clear()
        with contextlib.suppress(RuntimeError):
            api.get(where, who, policy=7)
        assert replays == ["replayed"], who
