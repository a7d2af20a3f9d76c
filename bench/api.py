"""api: the running service under 16 concurrent clients, against a bare FastAPI endpoint.

Both servers run under uvicorn in their own processes on this machine; this process drives
them with 16 concurrent clients (a lean asyncio HTTP/1.1 client, one keep-alive connection
each, every request encoded before timing):

* **bare**: a FastAPI endpoint that takes a JSON body and answers ``{"ok": true}``, doing no
  work: what the HTTP stack alone costs here (the baseline, same client, same bodies);
* **single writes**: ``kpi-ledger serve`` on PostgreSQL (a fresh database), once with one
  worker (the default) and once with ``--workers 2`` (``WORKERS``), each request one
  signed ``document.attested`` envelope to ``POST /v1/attestations`` with its signer's token
  (16 signers, one per client): events/s and latency (target ≥ 1,000/s, p99 < 100 ms);
* **batch ingest**: ``POST /v1/batch`` with 100 envelopes a request (target ≥ 5,000 events/s);
* **proofs**: ``GET /v1/proofs/inclusion`` for random entries of the log written above, once
  ``/v1/status`` says the read models have caught up with it (target p95 < 20 ms).

Ratio = the service's requests/s ÷ the bare endpoint's requests/s (one uvicorn process), in
the same run. The client runs on uvloop, as the servers do. All
envelopes are signed before any timing; the ledger's own clock accepts them (signed now).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bench.common import (
    attestation,
    attestations,
    bootstrap,
    percentile,
    pg_database,
    render_table,
    say,
    serving,
    signers,
    write_result,
)

NAME = "api"
CLIENTS = 16
TARGET_SINGLE = 1000.0
TARGET_SINGLE_P99_MS = 100.0
TARGET_BATCH = 5000.0
TARGET_PROOF_P95_MS = 20.0
BATCH_SIZE = 100
WORKERS = (1, 2)  # kpi-ledger serve --workers N, each measured on its own fresh database

bare = FastAPI()


@bare.post("/bare")
def bare_write(body: dict[str, Any]) -> dict[str, bool]:
    return {"ok": True}


@dataclass(frozen=True)
class Scale:
    single: int  # single-write requests
    batches: int  # batch requests of BATCH_SIZE envelopes
    proofs: int


SCALES = {
    "full": Scale(single=3000, batches=150, proofs=3000),
    "quick": Scale(single=800, batches=30, proofs=500),
    "tiny": Scale(single=48, batches=3, proofs=32),
}


def _prepare(
    db_url: str, home_dir: Path, count: int
) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """A new ledger with 16 signers, their tokens, and ``count`` signed envelopes."""
    from api.principals import Principals

    ledger = bootstrap(db_url, home_dir, CLIENTS)
    try:
        principals = Principals(ledger.service.sealed.datastore)  # type: ignore[attr-defined]
        tokens = {k.name: principals.issue(k.name) for k in ledger.signers}
    finally:
        ledger.close()
    keys = ledger.signers
    return tokens, [
        (keys[i % CLIENTS].name, attestation(keys[i % CLIENTS], i)) for i in range(count)
    ]


Request = tuple[str, str, dict[str, str], bytes | None]  # method, path, headers, body


def _encode(host: str, request: Request) -> bytes:
    method, path, headers, body = request
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _drive(base: str, requests: Sequence[Request]) -> dict[str, Any]:
    """Send ``requests`` (method, path, headers, body) with CLIENTS concurrent clients.

    Each client is one keep-alive HTTP/1.1 connection that sends a request and reads its
    answer (status line, headers, ``Content-Length`` body) before the next: a lean client,
    so that the load generator takes as little as possible of the CPU the servers share
    with it. Every request is encoded before the clock starts."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    pending = [_encode(host, r) for r in reversed(requests)]
    latencies: list[float] = []
    failures: list[str] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while pending:
                raw = pending.pop()
                began = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                status, length = _status_and_length(head)
                body = await reader.readexactly(length)
                latencies.append((time.perf_counter() - began) * 1000)
                if status >= 400:
                    failures.append(f"{status} {body[:200]!r}")
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return {
        "requests": len(requests),
        "seconds": seconds,
        "per_s": len(requests) / seconds,
        "ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
        },
    }


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")


def _wait_for_views(base: str, headers: dict[str, str], size: int) -> float:
    """Seconds until ``/v1/status`` says the views reflect the whole log of ``size``."""
    import httpx2 as httpx

    began = time.perf_counter()
    while True:
        status = httpx.get(f"{base}/v1/status", headers=headers, timeout=30).json()
        if status["views"]["seq"] >= size - 1 and status["views"]["current"]:
            return time.perf_counter() - began
        if time.perf_counter() - began > 600:
            raise RuntimeError(f"the views did not catch up: {status}")
        time.sleep(0.2)


def _service(
    pg_url: str, scale: Scale, workers: int, json_headers: dict[str, str]
) -> dict[str, Any]:
    """Single writes, batch ingest and proofs against ``kpi-ledger serve --workers N`` on a
    fresh database."""
    with pg_database(pg_url) as db_url, tempfile.TemporaryDirectory(prefix="kpi-bench-api-") as tmp:
        home = Path(tmp) / "home"
        count = scale.single + scale.batches * BATCH_SIZE
        tokens, envelopes = _prepare(db_url, home, count)
        singles, batched = envelopes[: scale.single], envelopes[scale.single :]

        def auth(name: str) -> dict[str, str]:
            return {**json_headers, "Authorization": f"Bearer {tokens[name]}"}

        serve = [sys.executable, "-m", "api.cli", "serve", "--db", db_url, "--home", str(home)]
        serve += ["--workers", str(workers), "--log-level", "warning"]
        with serving(serve) as (base, _):
            single = _run(
                _drive(base, [("POST", "/v1/attestations", auth(n), raw) for n, raw in singles])
            )
            say(
                f"api ({workers} worker{'s' if workers > 1 else ''}): single writes"
                f" {single['per_s']:,.0f}/s, p99 {single['ms']['p99']:.1f} ms"
            )
            by_signer: dict[str, list[bytes]] = {}
            for name, raw in batched:
                by_signer.setdefault(name, []).append(raw)
            batches = []
            for name, raws in sorted(by_signer.items()):  # a client posts its own facts
                for at in range(0, len(raws), BATCH_SIZE):
                    body_bytes = b'{"envelopes":[' + b",".join(raws[at : at + BATCH_SIZE]) + b"]}"
                    batches.append(("POST", "/v1/batch", auth(name), body_bytes))
            random.Random(3).shuffle(batches)
            events = len(batched)
            batch = _run(_drive(base, batches))
            batch["events_per_s"] = events / batch["seconds"]
            batch["events"] = events
            say(f"api: batch ingest {batch['events_per_s']:,.0f} events/s")
            size = 2 + CLIENTS + scale.single + events  # bootstrap, keys, what was written
            caught_up = _wait_for_views(base, auth(next(iter(tokens))), size)
            say(f"api: the views reflected the last write {caught_up:.1f} s after it")
            rng = random.Random(5)
            any_token = auth(next(iter(tokens)))
            gets = [
                (
                    "GET",
                    f"/v1/proofs/inclusion?index={rng.randrange(size)}&size={size}",
                    any_token,
                    None,
                )
                for _ in range(scale.proofs)
            ]
            proofs = _run(_drive(base, gets))
            say(f"api: proofs p95 {proofs['ms']['p95']:.1f} ms")
    return {
        "workers": workers,
        "single": single,
        "batch": batch,
        "views_caught_up_s": caught_up,
        "proofs": proofs,
    }


def _run(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """The client's event loop: uvloop's (installed with uvicorn's extras), as the servers'."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run(
    mode: str = "full", pg_url: str | None = None, *, results_dir: Path | None = None
) -> dict[str, Any]:
    if pg_url is None:
        raise SystemExit("the api benchmark needs PostgreSQL (--pg URL)")
    scale = SCALES[mode]
    json_headers = {"Content-Type": "application/json"}
    bodies = attestations(signers(1), scale.single)  # as the single writes: same fact, size
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning"]
    with serving([*uvicorn, "bench.api:bare"], "/docs") as (base, _):
        baseline = _run(_drive(base, [("POST", "/bare", json_headers, b) for b in bodies]))
    say(f"api: bare endpoint {baseline['per_s']:,.0f} req/s, p99 {baseline['ms']['p99']:.1f} ms")
    services = [_service(pg_url, scale, workers, json_headers) for workers in WORKERS]
    for service in services:
        single, batch, proofs = service["single"], service["batch"], service["proofs"]
        single["ratio_to_bare"] = single["per_s"] / baseline["per_s"]
        single["meets_target"] = (
            single["per_s"] >= TARGET_SINGLE and single["ms"]["p99"] < TARGET_SINGLE_P99_MS
        )
        batch["ratio_to_bare"] = batch["events_per_s"] / baseline["per_s"]
        batch["meets_target"] = batch["events_per_s"] >= TARGET_BATCH
        proofs["ratio_to_bare"] = proofs["per_s"] / baseline["per_s"]
        proofs["meets_target"] = proofs["ms"]["p95"] < TARGET_PROOF_P95_MS
    first = services[0]
    result = {
        "mode": mode,
        "scale": asdict(scale),
        "clients": CLIENTS,
        "bare": baseline,
        # the default service (one worker) at the top level; every configuration below
        "single": {**first["single"], "target": TARGET_SINGLE},
        "batch": {**first["batch"], "target": TARGET_BATCH},
        "views_caught_up_s": first["views_caught_up_s"],
        "proofs": {**first["proofs"], "target_p95_ms": TARGET_PROOF_P95_MS},
        "services": services,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    rows: list[list[Any]] = []
    b = result["bare"]
    ms = b["ms"]
    rows.append(["bare endpoint", "", b["per_s"], ms["p50"], ms["p95"], ms["p99"], 1.0])
    for service in result["services"]:
        for label, key, rate in (
            ("single signed writes", "single", "per_s"),
            ("batch ingest (events)", "batch", "events_per_s"),
            ("inclusion proofs", "proofs", "per_s"),
        ):
            r = service[key]
            rows.append(
                [
                    label,
                    service["workers"],
                    r[rate],
                    r["ms"]["p50"],
                    r["ms"]["p95"],
                    r["ms"]["p99"],
                    r["ratio_to_bare"],
                ]
            )
    say(
        render_table(
            f"the service under {result['clients']} concurrent clients"
            " (per second; ms per request)",
            ["what", "workers", "per s", "p50", "p95", "p99", "ratio to bare"],
            rows,
        )
    )
