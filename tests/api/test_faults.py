"""The service under database faults, and several services on one database (PostgreSQL).

Each test runs the real ``kpi-ledger serve`` in child processes (``serving_process``) and
injects a fault an operator meets: every backend of the database terminated again and again
while clients write and the projections catch up (``pg_terminate_backend``), a second service
started on the same database, the leading service killed. What must hold:

* no acknowledged write is lost or duplicated; every 2xx answer is true (the entry is in the
  log at that position, with that envelope), and so is every 5xx (``not_recorded``: a retry
  of the same envelope is recorded afresh, never a duplicate);
* checkpoints resume and stay consistent with the last one signed (``kpi-ledger verify``);
* the views catch up and equal a rebuild from zero;
* ``/v1/status`` and ``/v1/ready`` say what is true: both jobs ``ok`` once the faults stop,
  one leader per job among the services, a survivor leading within seconds of the leader's
  death.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from conftest import make_ledger

from api.principals import Principals
from signing.facts import read_fact, sign_fact
from signing.keys import SigningKey
from tests.api.test_end_to_end import serving_process
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def _eventually(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    return eventually(condition, seconds, every=0.1, tolerate=(httpx.TransportError,))


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def _ledger(pg_url: str, home: Path) -> tuple[SigningKey, str]:
    """A ledger on the database (``kpi-ledger init``), Lan's key registered, and her token."""
    ledger = make_ledger(pg_url, home)
    try:
        token = Principals(ledger.service.sealed.datastore).issue("lan")  # type: ignore[attr-defined]
        return ledger.users["lan"], token
    finally:
        ledger.service.close()


def _attestations(key: SigningKey, n: int, start: int = 0) -> list[bytes]:
    return [
        sign_fact(
            key, "document.attested", {"sha256": f"{start + i:064x}", "title": f"Hồ sơ {i}"}
        ).to_bytes()
        for i in range(n)
    ]


class Killer:
    """Terminates every backend of the database but its own, every ``every`` seconds, until
    stopped (bounded: at most ``rounds`` rounds)."""

    def __init__(self, pg_url: str, every: float = 0.25, rounds: int = 40) -> None:
        self.pg_url = pg_url
        self.every = every
        self.rounds = rounds
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        dbname = self.pg_url.rsplit("/", 1)[1].split("?")[0]
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            for _ in range(self.rounds):
                if self._stop.wait(self.every):
                    return
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchall()
                self.killed += sum(1 for (ok,) in rows if ok)


def _post(client: httpx.Client, base: str, token: str, envelope: bytes) -> tuple[int, Any]:
    try:
        response = client.post(
            f"{base}/v1/attestations",
            content=envelope,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=60,
        )
    except httpx.TransportError as exc:
        return 0, str(exc)  # no answer at all: the outcome is unknown to the client
    return response.status_code, response.json()


def _log(pg_url: str) -> dict[int, bytes]:
    """Every entry's envelope by position, read straight from the database."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT l.seq, e.state FROM log_entries l JOIN kpiledger_events e"
            " ON e.notification_id = l.notification_id ORDER BY l.seq"
        ).fetchall()
    return {int(seq): bytes(state) for seq, state in rows}


def _status(client: httpx.Client, base: str, token: str) -> dict[str, Any]:
    response = client.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def test_writes_and_views_under_terminated_backends(pg_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    key, token = _ledger(pg_url, home)
    envelopes = _attestations(key, 120)
    answers: dict[int, list[tuple[int, Any]]] = {i: [] for i in range(len(envelopes))}
    with serving_process(pg_url, home) as (base, _child), httpx.Client() as client:

        def write(indexes: range) -> None:
            with httpx.Client() as own:
                for i in indexes:
                    answers[i].append(_post(own, base, token, envelopes[i]))

        with Killer(pg_url) as killer:
            threads = [
                threading.Thread(target=write, args=(range(k, len(envelopes), 4),))
                for k in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert killer.killed > 0
        # Every answer is true. A 5xx or no answer: the client sends the same envelope again.
        for i, tried in answers.items():
            status, body = tried[-1]
            if status in (200, 201):
                continue
            assert status in (0, 500, 503), (status, body)
            if status == 503:  # nothing recorded, or nothing even tried (the token check)
                assert body["rule"] in ("server.not_recorded", "server.unavailable"), body
            elif status == 500:
                assert body["rule"] == "server.outcome_unknown", body
            again = _post(client, base, token, envelopes[i])
            assert again[0] in (200, 201), again
            if status == 503:  # "nothing was recorded" was true: the retry records it anew
                assert again[0] == 201, (body, again)
            tried.append(again)
        log = _log(pg_url)
        assert sorted(log) == list(range(len(log)))  # gap-free
        positions = {}
        for i, tried in answers.items():
            seqs = {b["seq"] for s, b in tried if s in (200, 201)}
            assert len(seqs) == 1, tried  # one position, however often it was answered
            seq = seqs.pop()
            assert log[seq] == envelopes[i]  # the answer was true
            positions[i] = seq
        nonces = [read_fact(raw, strict=False).nonce for raw in log.values()]
        assert len(nonces) == len(set(nonces))  # nothing recorded twice
        # the jobs recover: a checkpoint covering everything, the views at the head
        assert _eventually(
            lambda: (s := _status(client, base, token))["checkpoint_size"] == len(log)
            and s["checkpointer"] == "ok"
            and s["views"]["current"]
            and s["views"]["seq"] == len(log) - 1
        ), _status(client, base, token)
        ready = client.get(f"{base}/v1/ready")
        assert ready.status_code == 200 and ready.json()["ready"], ready.text
    # checkpoints stayed consistent with each other and with the entries
    _cli("verify", "--db", pg_url, "--home", str(home))


def test_the_runner_folds_a_history_through_cut_connections_and_equals_a_rebuild(
    pg_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    _cli("demo", "--db", pg_url, "--home", str(home), "--employees", "12", "--months", "2")
    principals_token = _token_for(pg_url, "binh.vo")
    with serving_process(pg_url, home) as (base, _child), httpx.Client() as client:
        seen: set[str] = set()
        auth = {"Authorization": f"Bearer {principals_token}"}
        with Killer(pg_url, every=0.4, rounds=12):
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                with suppress(httpx.TransportError):
                    answer = client.get(f"{base}/v1/status", headers=auth)
                    if answer.status_code == 200:
                        seen.add(answer.json()["views"]["state"])
                    else:  # a failure is said as one, never dressed as a state
                        assert answer.status_code in (500, 503), answer.text
                        assert answer.json()["rule"] in ("server.error", "server.unavailable")
                time.sleep(0.1)
        words = ("current", "scoring", "behind ", "retrying since ", "starting since ")
        assert all(w.startswith(words) for w in seen), seen
        assert _eventually(
            lambda: (s := _status(client, base, principals_token))["views"]["state"] == "current"
            and s["views"]["current"],
            60,
        ), _status(client, base, principals_token)
    served = _views(pg_url)
    _cli("rebuild", "evaluations", "--db", pg_url, "--home", str(home))
    assert _views(pg_url) == served


def _token_for(pg_url: str, name: str) -> str:
    from domain.service import LedgerService
    from ledger.config import parse_database

    service = LedgerService(parse_database(pg_url))
    try:
        return Principals(service.sealed.datastore).issue(name)  # type: ignore[attr-defined]
    finally:
        service.close()


def _views(pg_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT view, key, doc::text FROM kpi_view_docs ORDER BY view, key"
            ).fetchall()
        ]


def test_two_services_share_a_database_and_the_survivor_takes_over(
    pg_url: str, tmp_path: Path
) -> None:
    """Two hosts behind a load balancer: each with its own copy of the ledger home, both
    serving reads and writes; one leads each background job; kill -9 of the leader, and the
    other leads within seconds, signs checkpoints that extend the last one, keeps the views."""
    import shutil

    home = tmp_path / "home"
    key, token = _ledger(pg_url, home)
    second_home = tmp_path / "home-b"
    shutil.copytree(home, second_home)
    with ExitStack() as stack, httpx.Client() as client:
        base_a, child_a = stack.enter_context(serving_process(pg_url, home))
        base_b, child_b = stack.enter_context(serving_process(pg_url, second_home))
        pids = {base_a: child_a.pid, base_b: child_b.pid}
        envelopes = iter(_attestations(key, 40))
        for base in (base_a, base_b, base_a, base_b):  # both take writes
            status, body = _post(client, base, token, next(envelopes))
            assert status == 201, body

        def leaders(base: str) -> dict[str, str]:
            jobs = _status(client, base, token)["jobs"]
            return {name: job["holder"] for name, job in jobs.items() if job["state"] == "ok"}

        assert _eventually(lambda: len(leaders(base_a)) == 2 and leaders(base_a) == leaders(base_b))
        holders = leaders(base_a)  # one leader per job, the same seen from both services
        assert {h.rsplit(":", 1)[1] for h in holders.values()} <= {str(p) for p in pids.values()}
        # kill -9 the service that leads the checkpointer
        victim_pid = int(holders["checkpointer"].rsplit(":", 1)[1])
        survivor = base_b if victim_pid == pids[base_a] else base_a
        assert victim_pid in pids.values()
        os.kill(victim_pid, signal.SIGKILL)
        survivor_pid = str(pids[survivor])

        def survivor_leads() -> bool:
            jobs = _status(client, survivor, token)["jobs"]
            return all(
                j["state"] == "ok" and j["holder"].endswith(":" + survivor_pid)
                for j in jobs.values()
            )

        assert _eventually(survivor_leads, 20), _status(client, survivor, token)
        for envelope in list(envelopes)[:5]:
            status, body = _post(client, survivor, token, envelope)
            assert status == 201, body
        size = len(_log(pg_url))
        assert _eventually(
            lambda: (s := _status(client, survivor, token))["checkpoint_size"] == size
            and s["views"]["current"]
        )
        assert client.get(f"{survivor}/v1/ready").status_code == 200
    _cli("verify", "--db", pg_url, "--home", str(second_home))
    with psycopg.connect(pg_url) as conn:
        notes = [r[0] for r in conn.execute("SELECT note FROM log_checkpoints ORDER BY size")]
    assert len(notes) >= 2
    _assert_consistent(pg_url, home, notes)


def _assert_consistent(pg_url: str, home: Path, notes: list[str]) -> None:
    """Each signed checkpoint extends the one before (a consistency proof from the log)."""
    from domain.service import LedgerService
    from ledger.config import parse_database
    from ledger.home import LedgerHome
    from signing.checkpoint import verify_checkpoint
    from signing.merkle import verify_consistency

    keys = LedgerHome(home).log_keys()
    service = LedgerService(parse_database(pg_url))
    try:
        checkpoints = [verify_checkpoint(n, keys).checkpoint for n in notes]
        for one, two in pairwise(checkpoints):
            proof = service.sealed.consistency_proof(one.size, two.size)
            verify_consistency(one.size, two.size, proof, one.root, two.root)
    finally:
        service.close()


def test_ready_and_status_say_what_is_true_through_a_database_outage(
    pg_url: str, tmp_path: Path
) -> None:
    """The database refuses every connection for a while (``ALLOW_CONNECTIONS false`` and its
    sessions ended): the service stays alive, is not ready and says why, its jobs say they
    are retrying, a write is answered ``not_recorded``; once the database is back, all is well
    again without a restart."""
    home = tmp_path / "home"
    key, token = _ledger(pg_url, home)
    dbname = pg_url.rsplit("/", 1)[1].split("?")[0]
    admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
    envelope = _attestations(key, 1, start=900)[0]

    def allow(yes: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(yes).lower()}')
            if not yes:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (dbname,),
                )

    with serving_process(pg_url, home) as (base, _child), httpx.Client() as client:
        assert _eventually(lambda: client.get(f"{base}/v1/ready").status_code == 200)
        try:
            allow(False)

            def outage_seen() -> bool:
                answer = client.get(f"{base}/v1/ready")
                jobs = answer.json()["jobs"]
                return (
                    answer.status_code == 503
                    and answer.json()["database"].startswith("cannot be read")
                    and all(j.startswith("retrying since ") for j in jobs.values())
                )

            assert _eventually(outage_seen), client.get(f"{base}/v1/ready").text
            assert client.get(f"{base}/v1/health").status_code == 200  # alive all the same
            time.sleep(2.5)  # past the token's memory: the token itself cannot be looked up
            status, body = _post(client, base, token, envelope)
            assert status == 503 and body["rule"] in ("server.not_recorded", "server.unavailable")
        finally:
            allow(True)
        assert _eventually(
            lambda: client.get(f"{base}/v1/ready").status_code == 200
            and _status(client, base, token)["checkpointer"] == "ok"
            and _status(client, base, token)["jobs"]["projections"]["state"] == "ok"
        ), client.get(f"{base}/v1/ready").text
        status, body = _post(client, base, token, envelope)
        assert status == 201, body  # nothing was recorded before: recorded now, once
    assert list(_log(pg_url).values()).count(envelope) == 1
