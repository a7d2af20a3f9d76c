"""End to end: the real service (``kpi-ledger serve``, uvicorn on a loopback port, in its own
process) on PostgreSQL, driven over HTTP by the actors of ``../shared/spec/scenarios.md``.

The operator starts the ledger (its first administrator and the key of derived facts: what
``kpi-ledger init`` does) and issues each principal a token (``kpi-ledger principal add``).
Everything else goes over HTTP, each fact signed with its actor's own key and sent with that
actor's own token: the administrator registers the keys and the organisation, HR publishes the
policy and the catalogue, the supervisor assigns and rules on March's work, Lan declares it and
appeals, the reviewer decides. Then the scores read over HTTP are those of scenarios 1–3
(1073/12, then 1079/12 with the bounded adjustment, then 93.5625 after the appeal and still
1079/12 as of the close), the receipts verify, and the export bundle downloaded by the
inspector verifies offline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from api.principals import Principals
from api.routes.facts import family_of
from api.workers import READY_LINE
from bench.common import serving as bench_serving
from domain.errors import Refusal
from domain.service import Appended
from signing.bundle import ExportSource
from signing.checkpoint import log_verifier_keys, verify_checkpoint
from signing.facts import read_fact
from signing.keys import SigningKey
from signing.merkle import leaf_hash, verify_inclusion
from signing.receipt import TlogProof
from signing.verify import verify
from tests.domain.test_scenarios import bounded_adjustment, close, ordinary_month
from tests.domain.world import LAN, MARCH, World, at

pytestmark = pytest.mark.postgres


@contextmanager
def serving(db_url: str, home: Path, *, workers: int = 1) -> Iterator[str]:
    """``kpi-ledger serve`` in a child process; yields its base URL once it serves (with
    several workers: once every one of them serves, as the supervisor announces). On leaving,
    the service is stopped with SIGTERM and must stop cleanly."""
    with serving_process(db_url, home, workers=workers) as (base, child):
        yield base
    # uvicorn re-raises the SIGTERM it handled once it has shut down; the supervisor of
    # several workers exits 0 after stopping them
    assert child.returncode in (0, -signal.SIGTERM), child.stderr.read() if child.stderr else ""


@contextmanager
def serving_process(
    db_url: str, home: Path, *, workers: int = 1, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``kpi-ledger serve`` in a child process, on ``port`` or a free one: its base URL and
    the process (``bench.common.serving``: on leaving, SIGTERM unless it has stopped)."""
    args = [sys.executable, "-m", "api.cli", "serve", "--db", db_url, "--home", str(home)]
    args += ["--checkpoint-seconds", "1", "--log-level", "warning", "--workers", str(workers)]
    with bench_serving(
        args,
        env={"KPI_LEDGER_MAX_BACKDATE": "off"},
        port=port,
        announce=READY_LINE if workers > 1 else None,
    ) as served:
        yield served


class HttpWorld(World):
    """The standard world, with every actor's fact sent over HTTP with the actor's token."""

    base = ""
    client: httpx.Client

    def token(self, who: str) -> str:
        tokens: dict[str, str] = self.__dict__.setdefault("tokens", {})
        if who not in tokens:  # the operator's `kpi-ledger principal add WHO`
            tokens[who] = Principals(self.service.sealed.datastore).issue(who)  # type: ignore[attr-defined]
        return tokens[who]

    def send(self, raw: bytes) -> Appended:
        fact = read_fact(raw, strict=False)
        family = family_of(fact.type)
        response = self.client.post(
            f"{self.base}/v1/{family}",
            content=raw,
            headers={
                "Authorization": f"Bearer {self.token(fact.actor)}",
                "Content-Type": "application/json",
            },
        )
        doc = response.json()
        if response.status_code >= 400:
            raise Refusal(doc["detail"], rule=doc["rule"], fact_type=fact.type, actor=fact.actor)
        derived = tuple(Appended(d["seq"], "", 0, d["type"], "") for d in doc["derived"])
        return Appended(
            doc["seq"],
            doc["stream"],
            doc["version"],
            doc["type"],
            doc["nonce"],
            doc["duplicate"],
            derived,
        )

    def person(self, name: str) -> SigningKey:
        key = SigningKey.generate(name)
        self.send(self._registration(key))
        return key

    def do(self, who: str, fact_type: str, data: dict[str, Any], **kw: Any) -> Appended:
        return self.send(self.sign(who, fact_type, data, **kw))

    def refused_raw(self, raw: bytes, rule: str) -> Refusal:
        size = self.service.sealed.log_size()
        with pytest.raises(Refusal) as caught:
            self.send(raw)
        assert caught.value.rule == rule, str(caught.value)
        assert self.service.sealed.log_size() == size
        return caught.value

    def submit_all(self, envelopes: list[bytes]) -> None:
        for raw in envelopes:
            self.send(raw)

    def get(self, path: str, who: str, **params: Any) -> Any:
        return self.client.get(
            f"{self.base}{path}",
            params=params,
            headers={"Authorization": f"Bearer {self.token(who)}"},
        )

    def score(self, who: str, *, until: str | None = None, **params: Any) -> dict[str, Any]:
        """Lan's March score as ``who`` reads it (waiting, if ``until``, for that total)."""
        deadline = time.monotonic() + 20
        while True:
            response = self.get(f"/v1/scores/{LAN}/{MARCH}", who, **params)
            if response.status_code == 200:
                doc: dict[str, Any] = response.json()
                if until is None or doc["total"] == until:
                    return doc
            assert time.monotonic() < deadline, response.text
            time.sleep(0.2)


def _home(w: World, path: Path) -> Path:
    """The operator's ledger home: the checkpoint key and the key of derived facts."""
    path.mkdir()
    (path / "ledger.key").write_text(w.log_key.to_text() + "\n")
    (path / "facts.key").write_text(w.ledger_signer.to_text() + "\n")
    (path / "log.vkey").write_text(
        "".join(k.to_text() + "\n" for k in log_verifier_keys(w.log_key))
    )
    return path


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_scenarios_one_to_three_over_http(pg_url: str, tmp_path: Path, workers: int) -> None:
    """With ``--workers 2`` the facts land through both workers' writers (the ledger's writer
    lock between them), the scores come from the runner in the supervising process and the
    receipts from its checkpointer."""
    w = HttpWorld(pg_url)  # the operator's init: entry 0 (administrator), entry 1 (ledger)
    home = _home(w, tmp_path / "home")
    with serving(pg_url, home, workers=workers) as base, httpx.Client(timeout=30) as client:
        w.base, w.client = base, client
        w.organise()
        w.employ(LAN)
        # scenario 1: an ordinary month
        m = ordinary_month(w)
        one = w.score(LAN, until="1073/12")
        assert (one["grade"], one["Q"], one["C"], one["P"]) == ("good", "95", "94.375", "93.125")
        assert {line["seq"] for line in one["trace"]} >= {a.seq for a in m.assigned}
        # scenario 2: a bounded adjustment, the second approver refused when it is the same
        bounded_adjustment(w)
        two = w.score("tuan.sup", until="1079/12")
        assert two["grade"] == "good"
        # scenario 3: March is closed, Lan appeals, the reviewer overturns and exempts
        w.now = at("2026-04-02")
        closed = close(w, MARCH)
        w.now = at("2026-04-05")
        rejections = [a.seq for a in m.rejected]
        contested = [*rejections, m.delays[0].seq]
        w.do(LAN, "appeal.filed", {"appeal": "ap-1", "contested": contested, "grounds": "g"})
        ap = {"appeal": "ap-1", "appellant": LAN}
        w.do("hoa.hr", "appeal.assigned", {**ap, "reviewer": "an.rev"})
        w.now = at("2026-04-06")
        rulings = [
            {"act": rejections[0], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
            {"act": rejections[1], "ruling": "overturned", "reason": "hồ sơ đã đủ"},
            {"act": m.delays[0].seq, "ruling": "exempted", "reason": "ngập lụt"},
        ]
        decided = w.do(
            "an.rev", "appeal.decided", {**ap, "rulings": rulings, "reasons": "Có cơ sở"}
        )
        assert len(decided.derived) == 3
        now = w.score(LAN, until="93.5625")
        assert (now["grade"], now["Q"]) == ("excellent", "100")
        then = w.score(LAN, as_of=str(closed.seq), trace="false")
        assert (then["total"], then["grade"], then["source"]) == ("1079/12", "good", "log")
        diff = w.get(f"/v1/scores/{LAN}/{MARCH}/diff", "hoa.hr", as_of=str(closed.seq)).json()
        changes = {c["what"]: (c["before"], c["after"]) for c in diff["diff"]["changes"]}
        assert changes["grade"] == ("good", "excellent")  # then (the close) -> now
        appeal = w.get(f"/v1/appeals/{LAN}/ap-1", LAN).json()
        assert appeal["status"] == "decided" and {c["seq"] for c in appeal["cited"]} >= set(
            contested
        )
        # the decision's receipt, once a checkpoint seals it, verifies offline
        keys = log_verifier_keys(w.log_key)
        deadline = time.monotonic() + 20
        while (receipt := w.get(f"/v1/receipts/{decided.seq}", "binh.insp")).status_code == 404:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        proof = TlogProof.parse(receipt.text)
        sealed = verify_checkpoint(proof.checkpoint, keys).checkpoint
        entry = w.log_bytes()[decided.seq]
        verify_inclusion(leaf_hash(entry), decided.seq, sealed.size, proof.proof, sealed.root)
        # the inspector takes the bundle away and verifies it offline
        bundle = w.get("/v1/export", "binh.insp")
        assert bundle.status_code == 200
        (tmp_path / "bundle.tar.gz").write_bytes(bundle.content)
        size = w.service.sealed.log_size()
    with tarfile.open(tmp_path / "bundle.tar.gz") as tar:
        tar.extractall(tmp_path / "bundle", filter="data")
    report = verify(ExportSource(tmp_path / "bundle"), keys, workers=1)
    assert report.ok and report.size == size, report.problems
    assert report.signatures_checked == size
    w.service.close()
