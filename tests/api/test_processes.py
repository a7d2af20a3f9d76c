"""The processes of ``kpi-ledger serve --workers 2`` under faults, on PostgreSQL, while
clients write: ``kill -9`` of the supervisor, then of one worker. And the port: a service
does not start on a port something listens on, and an answer from a server that is not the
one started is not taken for its readiness (``bench.common.serving``).

Each test prepares a ledger with four signers and their tokens (``bench.common.bootstrap``, as
the api bench does), starts the service (``serving_process`` of ``test_end_to_end``, which
waits until the supervisor says every worker serves) and four clients on 127.0.0.1, each
posting its own signer's attestations one at a time, at most ``PER_CLIENT`` of them and for at
most ``LOAD_SECONDS``, until the service stops answering. Once ``KILL_AFTER`` writes have been
acknowledged, a process is killed. Afterwards no acknowledged write may be lost or duplicated:
every position a client was answered holds that client's envelope, the log has no gap, every
envelope is in it once, and ``kpi-ledger verify`` passes.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest

from api.principals import Principals
from api.workers import ORPHAN_SECONDS, STOP_SECONDS, _create_tables
from bench.common import ROOT, attestation, bootstrap, free_port, serving
from domain.service import LedgerService
from ledger.config import parse_database
from signing.entry import decode_entry
from tests.api.test_end_to_end import serving_process

CLIENTS = 4
PER_CLIENT = 150  # envelopes a client may send: the load is bounded in count...
LOAD_SECONDS = 30.0  # ...and in time
KILL_AFTER = 40  # writes acknowledged before the fault
REQUEST_SECONDS = 10.0  # a client's timeout for one request


@dataclass
class Client:
    """One writer: its envelopes, what the service answered, what it does not know."""

    name: str
    token: str
    envelopes: list[bytes]
    acked: dict[bytes, int] = field(default_factory=dict)  # envelope -> the seq answered
    unknown: list[bytes] = field(default_factory=list)  # sent, no answer: recorded or not
    failures: list[str] = field(default_factory=list)  # answers that are not 200 or 201

    def post(self, http: httpx.Client, base: str, raw: bytes) -> httpx.Response:
        return http.post(
            f"{base}/v1/attestations",
            content=raw,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )

    def write(self, base: str) -> None:
        """Post the envelopes one at a time until the service stops answering."""
        deadline = time.monotonic() + LOAD_SECONDS
        with httpx.Client(timeout=REQUEST_SECONDS) as http:
            for raw in self.envelopes:
                if time.monotonic() > deadline:
                    return
                try:
                    response = self.post(http, base, raw)
                except httpx.TransportError:
                    self.unknown.append(raw)
                    return
                if response.status_code not in (200, 201):
                    self.failures.append(f"{response.status_code} {response.text[:300]}")
                    return
                self.acked[raw] = response.json()["seq"]


class Load:
    """The clients, each in a thread of its own."""

    def __init__(self, clients: list[Client], base: str) -> None:
        self.clients = clients
        self.threads = [
            threading.Thread(target=c.write, args=(base,), daemon=True) for c in clients
        ]
        for thread in self.threads:
            thread.start()

    def acked(self) -> int:
        return sum(len(c.acked) for c in self.clients)

    def wait_for(self, count: int) -> None:
        """Until ``count`` writes have been acknowledged, at least one of each client's
        (bounded by the load's own time)."""
        while self.acked() < count or not all(c.acked for c in self.clients):
            assert any(t.is_alive() for t in self.threads), self.report()
            time.sleep(0.05)

    def join(self) -> None:
        """Until every client has stopped: the service no longer answers it (or the load's
        bounds)."""
        for thread in self.threads:
            thread.join(LOAD_SECONDS + REQUEST_SECONDS)
            assert not thread.is_alive()
        failures = [f for c in self.clients for f in c.failures]
        assert not failures, failures

    def report(self) -> str:
        return "; ".join(
            f"{c.name}: {len(c.acked)} acknowledged, {len(c.unknown)} unknown, {c.failures}"
            for c in self.clients
        )


@dataclass
class Setup:
    url: str
    home: Path
    clients: list[Client]


@pytest.fixture
def setup(pg_url: str, tmp_path: Path) -> Setup:
    """A ledger (administrator, ledger key) with a signer and a token for each client, and
    each client's envelopes, signed in advance."""
    home = tmp_path / "home"
    ledger = bootstrap(pg_url, home, CLIENTS)
    try:
        principals = Principals(ledger.service.sealed.datastore)  # type: ignore[attr-defined]
        clients = [
            Client(
                key.name,
                principals.issue(key.name),
                [attestation(key, i) for i in range(PER_CLIENT)],
            )
            for key in ledger.signers
        ]
    finally:
        ledger.close()
    return Setup(pg_url, home, clients)


# -- processes (Linux: /proc) -------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command's name (state, ppid, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def children(pid: int) -> dict[int, str]:
    """The children of ``pid``: each one's start time, to tell it from a later process that
    reuses its pid."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and int(fields[1]) == pid:
            found[int(entry)] = fields[19]
    return found


def alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's worker processes (its other child is multiprocessing's resource
    tracker)."""
    return [
        pid
        for pid in children(supervisor)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def wait_gone(processes: dict[int, str]) -> None:
    """Until none of ``processes`` runs: a worker left alone stops gracefully for at most
    ``ORPHAN_SECONDS``, then exits (the bound here leaves room for a busy machine)."""
    deadline = time.monotonic() + ORPHAN_SECONDS + 20
    while left := [pid for pid, started in processes.items() if alive(pid, started)]:
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.1)


def port_free(port: int) -> bool:
    """Nothing listens on the port: a socket bound without ``SO_REUSEPORT`` is let in."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the log -------------------------------------------------------------------------------


def assert_log(url: str, home: Path, clients: list[Client]) -> None:
    """No acknowledged write lost or duplicated, no gap, and ``kpi-ledger verify`` passes."""
    service = LedgerService(parse_database(url))
    try:
        size = service.sealed.log_size()
        rows = list(service.sealed.read_rows())
    finally:
        service.close()
    assert [row.seq for row in rows] == list(range(size))  # gap-free
    where: dict[bytes, int] = {}
    for row in rows:
        assert row.entry is not None
        envelope = decode_entry(row.entry).envelope
        assert envelope not in where, f"entries {where[envelope]} and {row.seq} are the same"
        where[envelope] = row.seq
    for client in clients:
        for raw, seq in client.acked.items():
            assert where.get(raw) == seq, f"{client.name}'s write acknowledged at {seq}"
    verify = [sys.executable, "-m", "api.cli", "verify", "--db", url, "--home", str(home)]
    verified = subprocess.run(
        [*verify, "--workers", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_kill_9_of_the_supervisor_takes_its_workers_with_it(setup: Setup) -> None:
    """The workers of a supervisor killed with SIGKILL exit (the kernel's parent-death signal
    and the end of file of the supervisor's pipe), the port is free again, and a service
    restarted on it serves: a write whose answer was lost is answered as a duplicate with its
    position if it had landed, an acknowledged one again as the duplicate it is."""
    clients = setup.clients
    with serving_process(setup.url, setup.home, workers=2) as (base, service):
        port = int(base.rsplit(":", 1)[1])
        processes = children(service.pid)
        assert len(workers_of(service.pid)) == 2
        load = Load(clients, base)
        load.wait_for(KILL_AFTER)
        os.kill(service.pid, signal.SIGKILL)
        assert service.wait(timeout=30) == -signal.SIGKILL
        load.join()
        wait_gone(processes)  # the workers, and multiprocessing's resource tracker
    assert port_free(port)
    restarted = serving_process(setup.url, setup.home, workers=2, port=port)
    with restarted as (base, service), httpx.Client(timeout=REQUEST_SECONDS) as http:
        for client in clients:
            sent = {*client.acked, *client.unknown}
            fresh = next(raw for raw in client.envelopes if raw not in sent)
            for raw in client.unknown:  # the answer was lost: send it again
                response = client.post(http, base, raw)
                assert response.status_code in (200, 201), response.text
                client.acked[raw] = response.json()["seq"]
            again, seq = next(iter(client.acked.items()))
            response = client.post(http, base, again)
            assert (response.status_code, response.json()["seq"]) == (200, seq)
            response = client.post(http, base, fresh)
            assert response.status_code == 201, response.text
            client.acked[fresh] = response.json()["seq"]
    assert service.returncode == 0, service.stderr.read() if service.stderr else ""
    assert_log(setup.url, setup.home, clients)


@pytest.mark.postgres
def test_kill_9_of_a_worker_stops_the_service(setup: Setup) -> None:
    """A worker killed with SIGKILL stops the service with status 1: the supervisor stops
    the other worker, which answers what it has in flight; nothing acknowledged is lost."""
    clients = setup.clients
    with serving_process(setup.url, setup.home, workers=2) as (base, service):
        port = int(base.rsplit(":", 1)[1])
        workers = workers_of(service.pid)
        assert len(workers) == 2
        processes = children(service.pid)
        load = Load(clients, base)
        load.wait_for(KILL_AFTER)
        os.kill(workers[0], signal.SIGKILL)
        assert service.wait(timeout=STOP_SECONDS + 30) == 1
        load.join()
        assert not [pid for pid in workers if alive(pid, processes[pid])]  # it joined them
        wait_gone(processes)  # and multiprocessing's resource tracker, once it is gone
    assert service.stderr is not None
    assert "a worker stopped; stopping the service" in service.stderr.read()
    assert port_free(port)
    assert_log(setup.url, setup.home, clients)


# -- the port ------------------------------------------------------------------------------


def _listening(*, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.postgres
def test_serve_refuses_a_port_another_service_listens_on(pg_url: str, tmp_path: Path) -> None:
    """A socket with ``SO_REUSEPORT`` listening on the port, as another service's worker (or
    an orphaned one) would be: ours would be let into its group; the service refuses."""
    with _listening(reuse_port=True) as other:
        port = str(other.getsockname()[1])
        serve = [sys.executable, "-m", "api.cli", "serve", "--db", pg_url, "--workers", "2"]
        refused = subprocess.run(
            [*serve, "--home", str(tmp_path / "home"), "--port", port],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,  # a service that started would run until then
        )
    assert refused.returncode == 2, refused.stderr
    assert f"cannot listen on 127.0.0.1:{port}: another process is listening" in refused.stderr


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _SharingServer(socketserver.ThreadingTCPServer):
    """An HTTP server that lets others listen on its port (``SO_REUSEPORT``)."""

    allow_reuse_address = True
    allow_reuse_port = True
    daemon_threads = True


def test_an_answer_from_another_server_on_the_port_is_not_readiness() -> None:
    """Another server answering on the port (a concurrent test's service, sharing it through
    ``SO_REUSEPORT``) made ``serving`` take a server that had not started for a ready one:
    one way to the end-to-end test's flake. Here the child never listens, and a foreign
    server answers every request on its port."""
    port = free_port()
    with _SharingServer(("127.0.0.1", port), _Answers) as foreign:
        thread = threading.Thread(target=foreign.serve_forever, daemon=True)
        thread.start()
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=REQUEST_SECONDS).is_success
            never = [sys.executable, "-c", "import time; time.sleep(60)"]  # ignores --port
            with (
                pytest.raises(RuntimeError, match=f"port {port} is served by another process"),
                serving(never, "/", start_seconds=30, port=port),
            ):
                pass
        finally:
            foreign.shutdown()
        thread.join()


def test_a_free_port_is_kept_from_other_processes() -> None:
    """``free_port`` leaves the port in TIME_WAIT: a bind that does not reuse addresses (as
    the kernel's choice of a port for another ``bind`` or an outgoing connection) is refused
    it, a server's bind with ``SO_REUSEADDR`` is not."""
    port = free_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()


@pytest.mark.postgres
def test_the_supervisor_creates_the_tables_its_workers_would_race_to_create(
    pg_url: str, tmp_path: Path
) -> None:
    """The end-to-end test's flake: two workers starting together on a ledger without a token
    table, one failed creating it (PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` is not safe
    against a concurrent one) and the service stopped. The supervisor creates it, and the
    views' tables, before it starts any worker."""
    bootstrap(pg_url, tmp_path / "home", 0).close()  # no principal yet: no token table
    database = parse_database(pg_url)

    def table(name: str) -> bool:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row and row[0])

    assert not table("kpi_api_principals") and not table("kpi_view_docs")
    _create_tables(database)
    assert table("kpi_api_principals") and table("kpi_view_docs")
