"""feed: single writes while 0, 50 and 200 clients follow the log over ``GET /v1/feed``.

``kpi-ledger serve`` (one process, as shipped) on a fresh PostgreSQL database with 16
signers. Each phase opens its subscribers, from a child process of their own (a lean asyncio
client on uvloop: one connection each, ``/v1/feed?from=<the log's size>``; ten check every
event's id, the others count the events and check the last id of each read), waits until
every stream has started, then drives single signed writes
(``POST /v1/attestations``) with 16 concurrent clients exactly as the api bench does
(``bench/api.py``), and waits until every subscriber has received every new position, once
and in order. Phases run in the order 0, 50, 200 subscribers, ``rounds`` times over.

Reported: writes/s and latency per phase, the ratio of the writes/s with N subscribers to
the writes/s with none (the medians over the rounds; target with 200: >= 0.8), the server's
CPU per write (``/proc/PID/stat``), and how long after the last write every subscriber had
it. The subscribers' reading costs the machine's CPU too (they run on the same cores); that
is part of what the ratio measures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.api import CLIENTS, _drive, _run
from bench.common import (
    attestation,
    bootstrap,
    median,
    pg_database,
    render_table,
    say,
    serving,
    write_result,
)

NAME = "feed"
TARGET = 0.8  # writes/s with the most subscribers ÷ writes/s with none
ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)
FULL_CHECKS = 10  # subscribers whose every event id is checked (the others count and check)


@dataclass(frozen=True)
class Scale:
    writes: int  # single writes per phase
    subscribers: tuple[int, ...]  # per phase, in this order
    rounds: int


SCALES = {
    "full": Scale(writes=3000, subscribers=(0, 50, 200), rounds=2),
    "quick": Scale(writes=1000, subscribers=(0, 50, 200), rounds=1),
    "tiny": Scale(writes=48, subscribers=(0, 2, 5), rounds=1),
}


# -- the subscribers' process ----------------------------------------------------------------


class _Stream:
    """One subscriber's connection: de-chunks the body and checks every event's id (``full``),
    or, to spare the machine's CPU for the service, counts the events and checks the last
    id of each read (the chunk framing holds no event line, so no de-chunking is needed)."""

    def __init__(self, start: int, *, full: bool) -> None:
        self.full = full
        self.expected = start  # the next id it must see
        self.events = 0
        self.out_of_order = 0
        self.raw = b""  # undecoded chunked bytes (full), or an incomplete event (counting)
        self.text = b""  # decoded, not yet a whole event
        self.done_at: float | None = None

    def feed(self, data: bytes) -> None:
        if self.full:
            self._check_all(data)
        else:
            self._count(data)

    def _count(self, data: bytes) -> None:
        raw = self.raw + data
        cut = raw.rfind(b"\n\n")
        if cut < 0:
            self.raw = raw
            return
        count = raw.count(b"\nevent: entry\n", 0, cut)
        if count:
            at = raw.rfind(b"\nid: ", 0, cut) + 5
            last = int(raw[at : raw.index(b"\n", at)])
            if last != self.expected + count - 1:
                self.out_of_order += 1
            self.events += count
            self.expected = last + 1
        self.raw = raw[cut + 2 :]

    def _check_all(self, data: bytes) -> None:
        self.raw += data
        body = bytearray()
        raw = self.raw
        at = 0
        while True:
            line_end = raw.find(b"\r\n", at)
            if line_end < 0:
                break
            size = int(raw[at:line_end].split(b";")[0] or b"0", 16)
            if len(raw) < line_end + 2 + size + 2:
                break
            body += raw[line_end + 2 : line_end + 2 + size]
            at = line_end + 2 + size + 2
        self.raw = raw[at:]
        text = self.text + bytes(body)
        cut = text.rfind(b"\n\n")
        if cut < 0:
            self.text = text
            return
        whole, self.text = text[: cut + 2], text[cut + 2 :]
        ids = [int(i) for i in ID.findall(whole)]
        if ids != list(range(self.expected, self.expected + len(ids))):
            self.out_of_order += 1
        self.events += len(ids)
        if ids:
            self.expected = ids[-1] + 1


async def _follow(
    host: str, port: int, token: str, start: int, count: int, pipe: Connection
) -> dict[str, Any]:
    streams = [_Stream(start, full=i < FULL_CHECKS) for i in range(count)]
    request = (
        f"GET /v1/feed?from={start} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    connections = [await asyncio.open_connection(host, port) for _ in range(count)]
    for _reader, writer in connections:
        writer.write(request)
    for reader, _writer in connections:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"a feed was refused: {head[:200]!r}")
    pipe.send("streaming")
    cpu = time.process_time()
    loop = asyncio.get_running_loop()
    final: asyncio.Future[int] = loop.create_future()

    def told_final() -> None:  # the parent sends the log's size once the writes are done
        loop.remove_reader(pipe.fileno())
        final.set_result(int(pipe.recv()))

    loop.add_reader(pipe.fileno(), told_final)
    stop = asyncio.Event()

    async def read(stream: _Stream, reader: asyncio.StreamReader) -> None:
        while not stop.is_set():
            data = await reader.read(262_144)
            if not data:
                raise RuntimeError("the server closed a feed")
            stream.feed(data)
            if final.done() and stream.expected >= final.result() and stream.done_at is None:
                stream.done_at = time.monotonic()
                if all(s.done_at is not None for s in streams):
                    stop.set()

    readers = [
        asyncio.ensure_future(read(s, r)) for s, (r, _w) in zip(streams, connections, strict=True)
    ]
    target = await final
    told = time.monotonic()
    for s in streams:
        if s.expected >= target and s.done_at is None:
            s.done_at = told
    if all(s.done_at is not None for s in streams):
        stop.set()
    waiting = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiting, *readers], timeout=300, return_when=asyncio.FIRST_COMPLETED)
    for task in readers:
        task.cancel()
    failed = [t.exception() for t in readers if t.done() and not t.cancelled() and t.exception()]
    for _r, writer in connections:
        writer.close()
    return {
        "events": [s.events for s in streams],
        "out_of_order": sum(s.out_of_order for s in streams),
        "all_delivered": all(s.expected == target for s in streams),
        "last_delivery_s": max((s.done_at or told) - told for s in streams),
        "errors": [repr(e) for e in failed],
        "cpu_s": time.process_time() - cpu,
    }


def _follower(host: str, port: int, token: str, start: int, count: int, pipe: Connection) -> None:
    """The child process: follow the feed with ``count`` connections; report on ``pipe``."""
    try:
        import uvloop

        result = uvloop.run(_follow(host, port, token, start, count, pipe))
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        result = asyncio.run(_follow(host, port, token, start, count, pipe))
    except BaseException as exc:
        pipe.send({"error": repr(exc)})
        raise
    pipe.send(result)


# -- the run ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_size(base: str, headers: dict[str, str]) -> int:
    import httpx2 as httpx

    answer = httpx.get(f"{base}/v1/entries?limit=1", headers=headers, timeout=30)
    answer.raise_for_status()
    return int(answer.headers["x-log-size"])


def _phase(
    base: str,
    pid: int,
    admin: dict[str, str],
    subscribers: int,
    writes: list[tuple[str, str, dict[str, str], bytes | None]],
) -> dict[str, Any]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    start = _log_size(base, admin)
    child: Any = None
    parent_end: Connection | None = None
    if subscribers:
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        token = admin["Authorization"].removeprefix("Bearer ")
        child = context.Process(
            target=_follower, args=(host, int(port), token, start, subscribers, child_end)
        )
        child.start()
        if not parent_end.poll(120):
            raise RuntimeError("the subscribers did not start")
        said = parent_end.recv()
        if said != "streaming":
            raise RuntimeError(f"the subscribers failed: {said}")
    cpu = _cpu_seconds(pid)
    driven = _run(_drive(base, writes))
    driven["server_cpu_ms_per_write"] = (_cpu_seconds(pid) - cpu) * 1000 / len(writes)
    driven["subscribers"] = subscribers
    final = start + len(writes)
    if _log_size(base, admin) != final:
        raise RuntimeError("the log did not grow by the writes")
    if parent_end is not None:
        parent_end.send(final)
        if not parent_end.poll(400):
            raise RuntimeError("the subscribers did not report")
        report = parent_end.recv()
        child.join(30)
        if "error" in report or report["errors"]:
            raise RuntimeError(f"the subscribers failed: {report}")
        expected = len(writes)
        if not report["all_delivered"] or report["out_of_order"]:
            raise RuntimeError(f"a subscriber missed or repeated positions: {report}")
        if any(n != expected for n in report["events"]):
            raise RuntimeError(f"a subscriber got {report['events']} events, not {expected}")
        driven["delivered_to_all_s"] = report["last_delivery_s"]
        driven["subscribers_cpu_ms_per_write"] = report["cpu_s"] * 1000 / len(writes)
        driven["events_delivered"] = sum(report["events"])
    return driven


def run(
    mode: str = "full", pg_url: str | None = None, *, results_dir: Path | None = None
) -> dict[str, Any]:
    if pg_url is None:
        raise SystemExit("the feed benchmark needs PostgreSQL (--pg URL)")
    scale = SCALES[mode]
    phases = [n for _ in range(scale.rounds) for n in scale.subscribers]
    with (
        pg_database(pg_url) as db_url,
        tempfile.TemporaryDirectory(prefix="kpi-bench-feed-") as tmp,
    ):
        from api.principals import Principals

        home = Path(tmp) / "home"
        ledger = bootstrap(db_url, home, CLIENTS)
        try:
            principals = Principals(ledger.service.sealed.datastore)  # type: ignore[attr-defined]
            tokens = {k.name: principals.issue(k.name) for k in ledger.signers}
            admin = {"Authorization": f"Bearer {principals.issue('admin')}"}
        finally:
            ledger.close()
        keys = ledger.signers
        json_headers = {"Content-Type": "application/json"}
        batches = []
        for p in range(len(phases)):
            batch: list[tuple[str, str, dict[str, str], bytes | None]] = []
            for i in range(scale.writes):
                key = keys[i % CLIENTS]
                auth = {**json_headers, "Authorization": f"Bearer {tokens[key.name]}"}
                batch.append(
                    ("POST", "/v1/attestations", auth, attestation(key, p * scale.writes + i))
                )
            batches.append(batch)
        serve = [sys.executable, "-m", "api.cli", "serve", "--db", db_url, "--home", str(home)]
        serve += ["--log-level", "warning"]
        results = []
        with serving(serve) as (base, process):
            for subscribers, batch in zip(phases, batches, strict=True):
                result = _phase(base, process.pid, admin, subscribers, batch)
                say(
                    f"feed: {subscribers} subscribers: writes {result['per_s']:,.0f}/s,"
                    f" p99 {result['ms']['p99']:.0f} ms,"
                    f" server {result['server_cpu_ms_per_write']:.2f} ms CPU a write"
                )
                results.append(result)
    rates = {n: [r["per_s"] for r in results if r["subscribers"] == n] for n in scale.subscribers}
    baseline = median(rates[scale.subscribers[0]])
    ratios = [
        {
            "subscribers": n,
            "writes_per_s": median(rates[n]),
            "ratio": median(rates[n]) / baseline,
            "p99_ms": median([r["ms"]["p99"] for r in results if r["subscribers"] == n]),
            "server_cpu_ms_per_write": median(
                [r["server_cpu_ms_per_write"] for r in results if r["subscribers"] == n]
            ),
            "subscribers_cpu_ms_per_write": median(
                [
                    r.get("subscribers_cpu_ms_per_write", 0.0)
                    for r in results
                    if r["subscribers"] == n
                ]
            ),
            "delivered_to_all_s": max(
                (r.get("delivered_to_all_s", 0.0) for r in results if r["subscribers"] == n),
                default=0.0,
            ),
        }
        for n in scale.subscribers
    ]
    most = ratios[-1]
    result = {
        "mode": mode,
        "scale": asdict(scale),
        "clients": CLIENTS,
        "phases": results,
        "ratios": ratios,
        "target": TARGET,
        "most_subscribers": most["subscribers"],
        "ratio": most["ratio"],
        "meets_target": most["ratio"] >= TARGET,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            r["subscribers"],
            r["writes_per_s"],
            r["p99_ms"],
            r["server_cpu_ms_per_write"],
            r["subscribers_cpu_ms_per_write"],
            r["delivered_to_all_s"],
            r["ratio"],
        ]
        for r in result["ratios"]
    ]
    say(
        render_table(
            f"single writes ({result['clients']} clients) while subscribers follow the feed"
            " (medians over the rounds)",
            [
                "subscribers",
                "writes/s",
                "p99 ms",
                "server CPU ms/write",
                "their CPU ms/write",
                "all had it s",
                "ratio",
            ],
            rows,
        )
    )
