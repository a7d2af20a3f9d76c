"""The service under faults, over real sockets: an oversized body sent chunked, a write whose
batch failed, a read that crashed, an organisation read that failed. Each answer must be a
problem document whose words are true (what was recorded), and a keep-alive connection must
stay usable after a 500 or a 503."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.access import Organisation
from api.app import create_app
from api.runtime import Runtime, Settings
from domain.errors import WriteFailed
from ledger.config import parse_database
from ledger.home import LedgerHome
from tests.api.live import Answer, Connection, served
from tests.domain.world import World

LIMIT = 50_000  # the body limit of these tests' service


@dataclass
class Service:
    app: FastAPI
    rt: Runtime
    w: World
    host: str
    port: int
    tokens: dict[str, str]

    def auth(self, who: str, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **more}

    def connect(self) -> Connection:
        return Connection(self.host, self.port)

    def envelope(self, i: int) -> bytes:
        return self.w.sign(
            "lan", "document.attested", {"sha256": f"{i:064x}", "title": f"Hồ sơ {i}"}
        )

    def size(self) -> int:
        return self.w.service.sealed.log_size()


def _app(url: str, w: World, tmp_path: Path) -> FastAPI:
    settings = Settings(
        parse_database(url), LedgerHome(tmp_path / "no-home"), max_body=LIMIT, projections=False
    )
    return create_app(settings, runtime=lambda s: Runtime.open(s, service=w.service))


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    w = World(sqlite_url)
    w.person("lan")
    yield w
    w.service.close()


@pytest.fixture
def service(sqlite_url: str, world: World, tmp_path: Path) -> Iterator[Service]:
    app = _app(sqlite_url, world, tmp_path)
    with served(app) as (host, port):
        rt: Runtime = app.state.runtime
        tokens = {name: rt.principals.issue(name) for name in ("admin", "lan")}
        yield Service(app, rt, world, host, port, tokens)


def _problem(answer: Answer, status: int, rule: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/problem+json"), answer
    doc: dict[str, Any] = answer.json()
    assert doc["rule"] == rule and doc["type"] == f"urn:kpi-ledger:problem:{rule}", doc
    assert doc["status"] == status and doc["title"] and doc["detail"]
    return doc


def _json(who: Service, name: str) -> dict[str, str]:
    return who.auth(name, **{"Content-Type": "application/json"})


# -- a body sent chunked -----------------------------------------------------------------------


def test_an_oversized_chunked_body_is_a_413_over_a_socket(service: Service) -> None:
    size = service.size()
    big = b'{"envelopes": [' + b" " * (LIMIT + 10_000) + b"]}"
    with service.connect() as conn:
        answer = conn.request(
            "POST",
            "/v1/batch",
            _json(service, "lan"),
            chunks=[big[i : i + 8192] for i in range(0, len(big), 8192)],
        )
        doc = _problem(answer, 413, "request.too_large")
        assert f"{LIMIT:,} bytes" in doc["detail"]
        # the rest of the body is not read: the server says so and closes the connection
        assert answer.headers["connection"] == "close"
        assert conn.closed_by_server()
    assert service.size() == size


def test_a_chunked_body_under_the_limit_is_read_whole(service: Service) -> None:
    size = service.size()
    envelope = service.envelope(1)
    with service.connect() as conn:
        # in small chunks: the body is handed to the application only once it has ended
        pieces = [envelope[i : i + 100] for i in range(0, len(envelope), 100)]
        first = conn.request("POST", "/v1/attestations", _json(service, "lan"), chunks=pieces)
        assert first.status == 201, first
        assert first.json()["seq"] == size
        # the same connection answers the next request, chunked or not
        again = conn.request("POST", "/v1/attestations", _json(service, "lan"), chunks=[envelope])
        assert again.status == 200 and again.json()["duplicate"] is True, again
        batch = json.dumps({"envelopes": [json.loads(service.envelope(2))]}).encode()
        third = conn.request("POST", "/v1/batch", _json(service, "lan"), batch)
        assert third.status == 200 and third.json()["accepted"] == 1, third
    assert service.size() == size + 2


def test_a_chunked_body_with_the_test_client(sqlite_url: str, world: World, tmp_path: Path) -> None:
    app = _app(sqlite_url, world, tmp_path)
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        headers = {
            "Authorization": f"Bearer {rt.principals.issue('lan')}",
            "Content-Type": "application/json",
        }

        def stream(body: bytes) -> Iterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        size = world.service.sealed.log_size()
        big = client.post(
            "/v1/batch", headers=headers, content=stream(b"[" + b" " * (LIMIT + 1) + b"]")
        )
        assert big.status_code == 413, big.text
        assert big.json()["rule"] == "request.too_large"
        envelope = world.sign("lan", "document.attested", {"sha256": "ab" * 32, "title": "t"})
        small = client.post("/v1/attestations", headers=headers, content=stream(envelope))
        assert small.status_code == 201, small.text
        assert small.json()["seq"] == size
        declared = client.post("/v1/batch", headers=headers, content=b" " * (LIMIT + 1))
        assert declared.status_code == 413 and declared.json()["rule"] == "request.too_large"


# -- failures of a write and of a read -----------------------------------------------------------


FAILURES = [
    (WriteFailed("the batch's transaction failed", recorded=False), 503, "server.not_recorded"),
    (WriteFailed("the commit's outcome is unknown", recorded=None), 500, "server.outcome_unknown"),
    (RuntimeError("something unexpected"), 500, "server.outcome_unknown"),
    (WriteFailed("the answer was lost", recorded=True), 500, "server.answer_lost"),
]


@pytest.mark.parametrize(("error", "status", "rule"), FAILURES, ids=[f[2] for f in FAILURES])
def test_a_failed_write_says_what_was_recorded_and_keeps_the_connection(
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
    rule: str,
) -> None:
    writer = service.rt.writer
    real = writer.submit_async

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    size = service.size()
    with service.connect() as conn, caplog.at_level(logging.ERROR):
        monkeypatch.setattr(writer, "submit_async", failing)
        answer = conn.request(
            "POST", "/v1/attestations", _json(service, "lan"), service.envelope(7)
        )
        doc = _problem(answer, status, rule)
        assert answer.headers["retry-after"].isdigit()
        assert "connection" not in answer.headers  # keep-alive
        detail = doc["detail"]
        assert str(error) not in detail  # no internals
        if rule == "server.not_recorded":
            assert detail == "nothing was recorded: retry"
        else:
            assert "retry with the same envelope" in detail
            assert "original position (status 200)" in detail
            assert ("unknown" in detail) == (rule == "server.outcome_unknown")
        assert service.size() == size
        # the same connection: the retry of the same envelope is recorded now
        monkeypatch.setattr(writer, "submit_async", real)
        retry = conn.request("POST", "/v1/attestations", _json(service, "lan"), service.envelope(7))
        assert retry.status == 201, retry
        assert retry.json()["seq"] == size
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, [r.getMessage() for r in caplog.records]
    assert tracebacks[0].name == "kpi_ledger.api" and tracebacks[0].exc_info[1] is error  # type: ignore[index]


def test_a_failed_read_is_a_500_and_the_connection_stays(
    service: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("the checkpoint table is gone")

    with service.connect() as conn, caplog.at_level(logging.ERROR):
        monkeypatch.setattr(service.rt.service.sealed, "latest_checkpoint", broken)
        answer = conn.request("GET", "/v1/checkpoint", service.auth("lan"))
        doc = _problem(answer, 500, "server.error")
        assert doc["detail"] == "the server failed to answer; try again"
        assert "recorded" not in doc["detail"]
        monkeypatch.undo()
        after = conn.request("GET", "/v1/checkpoint", service.auth("lan"))
        _problem(after, 404, "log.no_checkpoint")  # answered, on the same connection
        entries = conn.request("GET", "/v1/entries?limit=2", service.auth("admin"))
        assert entries.status == 200 and len(entries.body.splitlines()) == 2
    assert len([r for r in caplog.records if r.exc_info is not None]) == 1


def test_a_read_that_met_a_dead_connection_is_answered_again_once(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a database restart every pooled connection is dead: the first read to meet one
    heals the pools and is answered, not failed; a read failing again is a 500."""
    from eventsourcing.persistence import OperationalError

    real = service.rt.service.sealed.latest_checkpoint
    healed: list[int] = []
    failures = [1]

    def flaky() -> Any:
        if failures:
            failures.pop()
            raise OperationalError("server closed the connection unexpectedly")
        return real()

    monkeypatch.setattr(service.rt.service.sealed, "latest_checkpoint", flaky)
    monkeypatch.setattr(service.rt, "heal", lambda: healed.append(1))
    with service.connect() as conn:
        first = conn.request("GET", "/v1/checkpoint", service.auth("lan"))
        _problem(first, 404, "log.no_checkpoint")  # answered: there is no checkpoint yet
        assert healed == [1]
        failures.extend([1, 1])  # fails again after the heal: the truth, a 500
        _problem(conn.request("GET", "/v1/checkpoint", service.auth("lan")), 500, "server.error")
        assert healed == [1, 1]


# -- the organisation, when the database fails -------------------------------------------------


def test_an_organisation_read_failure_is_raised_not_a_refusal(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = Organisation(service.w.service)
    # a principal without roles, and a unit that does not exist: a missing stream is "none"
    lan = org.caller("lan")
    assert not lan.reads_everything and lan.roles == {} and not lan.employee
    assert org.chain("NO-SUCH-UNIT") == ["NO-SUCH-UNIT"]
    assert org.posting_unit("nobody", None) == []
    with service.connect() as conn:
        refused = conn.request("GET", "/v1/entries", service.auth("lan"))
        _problem(refused, 403, "auth.forbidden")  # truly not allowed

        def outage(*args: Any, **kwargs: Any) -> Any:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(service.w.service.repository, "get", outage)
        with pytest.raises(psycopg.OperationalError):
            org.caller("admin")
        for who in ("admin", "lan"):  # neither is told it may not read
            answer = conn.request("GET", "/v1/entries", service.auth(who))
            _problem(answer, 500, "server.error")
        monkeypatch.undo()
        back = conn.request("GET", "/v1/entries?limit=1", service.auth("admin"))
        assert back.status == 200, back
