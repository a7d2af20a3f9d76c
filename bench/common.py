"""Shared helpers: statistics, tables, result files, throwaway databases, signed test data.

Every benchmark compares the code under test with a baseline measured in the same run on the
same machine (the machine is shared and noisy), and reports the ratio next to its target.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from eventsourcing.persistence import ApplicationRecorder, InfrastructureFactory
from eventsourcing.utils import Environment
from psycopg import sql

from domain.service import Appended, LedgerService
from ledger.checkpoints import Checkpointer
from ledger.config import parse_database
from ledger.home import LedgerHome
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey, VerifierKey

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_PREFIX = "kpi_bench_"

PLAIN_MODULES = {
    "sqlite": "eventsourcing.sqlite:SQLiteFactory",
    "postgres": "eventsourcing.postgres:PostgresFactory",
}


# -- statistics -----------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent  # the repository


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def timed(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- output ---------------------------------------------------------------------------------


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
            )
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


def verdict(ratio: float, target: float, *, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "meets" if ok else "MISSES"


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cryptography": version("cryptography"),
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
    }


def write_result(name: str, data: dict[str, Any], results_dir: Path | None = None) -> Path:
    folder = RESULTS_DIR if results_dir is None else results_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps({"benchmark": name, "machine": machine_info(), **data}, indent=2, sort_keys=True)
        + "\n"
    )
    return path


def say(text: str = "") -> None:
    print(text, flush=True)


# -- databases ------------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """The URL without the ledger's own query options (``schema``, ``pool_size``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("schema", "pool_size")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_query(url: str, **options: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in options]
    query.extend(options.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def pg_version(url: str) -> str:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def backends(
    pg_url: str | None, pg_is_database: bool
) -> list[tuple[str, contextlib.AbstractContextManager[str | None]]]:
    """The backends a benchmark runs on: SQLite (yields None), then PostgreSQL when given —
    a fresh database on the server ``pg_url``, or ``pg_url`` itself if it is a database."""
    chosen: list[tuple[str, contextlib.AbstractContextManager[str | None]]] = [
        ("sqlite", contextlib.nullcontext(None))
    ]
    if pg_url is not None:
        chosen.append(
            ("postgres", contextlib.nullcontext(pg_url) if pg_is_database else pg_database(pg_url))
        )
    return chosen


@contextlib.contextmanager
def pg_database(server_url: str) -> Iterator[str]:
    """A new empty ``kpi_bench_<hex>`` database on ``server_url``; dropped afterwards."""
    name = DB_PREFIX + secrets.token_hex(6)
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            ).format(sql.Identifier(name))
        )
    parts = urlsplit(admin)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def pg_schema(db_url: str) -> Iterator[str]:
    """A new empty schema in the database ``db_url``: yields the ledger URL (``?schema=``)."""
    name = "bench_" + secrets.token_hex(6)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield with_query(db_url, schema=name)
    finally:
        with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@dataclass
class Store:
    """A recorder built by the library's factory from a ledger URL (sealed or plain)."""

    factory: InfrastructureFactory[Any]
    recorder: ApplicationRecorder

    def close(self) -> None:
        self.factory.close()


def open_store(url: str, *, sealed: bool) -> Store:
    """The application recorder for ``url``: the ledger's sealed one, or the library's own.

    Both come from ``InfrastructureFactory.construct`` with the environment
    ``ledger.config.parse_database`` produces; only ``PERSISTENCE_MODULE`` differs, so both
    use the library's datastore with identical settings.
    """
    database = parse_database(url)
    env = dict(database.env)
    if not sealed:
        env["PERSISTENCE_MODULE"] = PLAIN_MODULES[database.backend]
    factory = InfrastructureFactory.construct(Environment("Bench", env))
    return Store(factory, factory.application_recorder())


def sqlite_url(folder: Path, name: str) -> str:
    return f"sqlite:///{folder / name}"


# -- signed data ----------------------------------------------------------------------------


def signers(count: int) -> list[SigningKey]:
    return [SigningKey.generate(f"signer{i:02d}") for i in range(count)]


def attestation(key: SigningKey, i: int) -> bytes:
    """A real signed ``document.attested`` envelope (about 700 bytes)."""
    digest = hashlib.sha256(f"document {i} {secrets.token_hex(4)}".encode()).hexdigest()
    title = f"Evaluation report {i:07d}, unit {i % 97:02d}, annex {chr(65 + i % 26)}"
    return sign_fact(key, "document.attested", {"sha256": digest, "title": title}).to_bytes()


def attestations(keys: Sequence[SigningKey], count: int) -> list[bytes]:
    return [attestation(keys[i % len(keys)], i) for i in range(count)]


# -- a server in a child process -----------------------------------------------------------


def free_port() -> int:
    """A loopback port that nothing uses, and that no other process will be handed for the
    next minute: it is left in TIME_WAIT (a connection accepted on it, closed from the
    accepting side first), so the kernel gives it to no ``bind`` to port 0 (another test's
    ``free_port``) and to no outgoing connection, while a server that sets ``SO_REUSEADDR``
    (uvicorn, ``kpi-ledger serve --workers N``) still binds it. (Released at once, as it was,
    it could be handed to a concurrent test during the seconds our server takes to start.)"""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = listener.accept()
            accepted.close()  # the accepting side closes first: its end is the one in TIME_WAIT
    return port


@contextlib.contextmanager
def serving(
    args: Sequence[str],
    ready: str = "/v1/openapi.json",
    *,
    env: dict[str, str] | None = None,
    start_seconds: float = 60.0,
    port: int | None = None,
    announce: str | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run a server command (``--port`` is added: ``port``, or a ``free_port()``) in a child
    process from the repository's root; yield its base URL and the process once it is ready.
    On leaving, it is stopped with SIGTERM and waited for: the caller may check
    ``process.returncode`` afterwards, and read what it wrote on its stderr from
    ``process.stderr`` (kept in a file while it runs, so that it never blocks on a full pipe;
    written to this process's stderr too if the block raised). The benches and the end-to-end
    tests share this.

    Ready means: ``announce``, if given, is in the child's stderr (``kpi-ledger serve
    --workers N`` writes ``api.workers.READY_LINE`` once every worker serves); ``GET ready``
    answers below 500; the child still runs; and every socket listening on the port is the
    child's or its descendants' (Linux: ``/proc``; elsewhere that check is skipped). A port
    shared with a foreign server is an error.

    Why: the end-to-end test failed once with ``ConnectError: [Errno 111] Connection
    refused`` on its first write, after this probe had been answered, because "something
    answers" was taken for "the server is ready". The cause seen (its stderr caught once): of
    the two workers of ``serve --workers 2``, starting together on a ledger without a token
    table, one failed creating it (PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` races; the
    supervisor now creates it first, ``api.workers._create_tables``) and the service stopped,
    while the other had already answered the probe. A second way to the same symptom:
    ``free_port`` released its port at once, so while a service was starting the kernel could
    hand the port to a test running at the same time (another xdist worker, another person's
    run: the same user); ``serve --workers N`` checked the port with ``SO_REUSEPORT`` set,
    which the kernel lets share a port with a listening socket of the same user, so the second
    service joined the first one's socket group; the other service could answer the probe,
    then stop before ours listened. Now a service with workers announces readiness only when
    every worker serves, the port is kept from other processes (``free_port``), a service
    refuses a port anything listens on (``api.workers._check_free``), and an answer from a
    foreign listener is not readiness."""
    import httpx2 as httpx

    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory(prefix="kpi-serving-") as folder:
        log_path = Path(folder) / "stderr"
        with log_path.open("a", encoding="utf-8") as log:
            child = subprocess.Popen(
                [*args, "--port", str(port)],
                env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
            )
        base = f"http://127.0.0.1:{port}"
        failed = True
        try:
            deadline = time.monotonic() + start_seconds
            while True:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log_path.read_text()}")
                if announce is None or announce in log_path.read_text():
                    try:
                        answered = httpx.get(base + ready, timeout=1).status_code < 500
                    except httpx.TransportError:
                        answered = False
                    if answered:
                        foreign = _foreign_listeners(port, child.pid)
                        if foreign:
                            raise RuntimeError(
                                f"port {port} is served by another process too (listening"
                                f" sockets {sorted(foreign)} are not the server's)"
                            )
                        if child.poll() is None:
                            break
                time.sleep(0.2)
            yield base, child
            failed = False
        finally:
            if child.poll() is None:
                child.terminate()
            try:
                child.wait(timeout=40)
            except subprocess.TimeoutExpired:
                failed = True
                child.kill()
                child.wait()
                raise
            finally:
                text = log_path.read_text()
                child.stderr = io.StringIO(text)
                if failed and text:
                    sys.stderr.write(f"--- the server's stderr ---\n{text}")


def _foreign_listeners(port: int, root: int) -> set[int]:
    """The inodes of the TCP sockets listening on ``port`` (where a connection to 127.0.0.1
    reaches them) that neither ``root`` nor any of its descendants holds. Empty where there
    is no ``/proc/net/tcp``."""
    listening: set[int] = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # the kernel writes each 32-bit word of the address in host (little) order
                words = bytes.fromhex(address)
                raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
                if socket.inet_ntop(family, raw) in LOOPBACK_LISTENERS:
                    listening.add(int(fields[9]))
    return listening - _socket_inodes(_process_tree(root)) if listening else set()


LOOPBACK_LISTENERS = {"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1"}


def _process_tree(root: int) -> set[int]:
    """``root`` and its descendants (their parents read from ``/proc/PID/stat``)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def _socket_inodes(pids: set[int]) -> set[int]:
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


# -- a ledger with keys ---------------------------------------------------------------------


@dataclass
class Ledger:
    """A ``LedgerService`` initialised like ``kpi-ledger init``, with registered signers."""

    service: LedgerService
    admin: SigningKey
    signers: list[SigningKey]
    home: LedgerHome
    checkpointer: Checkpointer

    def log_keys(self) -> list[VerifierKey]:
        return self.home.log_keys()

    def close(self) -> None:
        self.service.close()


def bootstrap(url: str, home_dir: Path, signer_count: int) -> Ledger:
    """Admin self-registration at entry 0, log keys in the meta table, then the signers."""
    service = LedgerService(parse_database(url))
    try:
        home = LedgerHome(home_dir)
        origin = f"bench.kpi-ledger.local/{secrets.token_hex(4)}"
        admin = SigningKey.generate("admin")
        service.initialise(home, origin, admin)
        ledger_key = home.ledger_key()
        keys = signers(signer_count)
        registrations = [
            key_registration(admin, k.verifier(), admin=False).to_bytes() for k in keys
        ]
        check_appended(service.submit_many(registrations))
        checkpointer = Checkpointer(service.sealed, ledger_key, home.state_path)
    except BaseException:
        service.close()
        raise
    return Ledger(service, admin, keys, home, checkpointer)


def sample_catalogue(agency: str, extra_items: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The data of a ``catalogue.published``: version 1 from 2026-01-01, two one-stop items, a
    leader's item (``LEAD-01``, for heads only), then ``extra_items``."""
    return {
        "agency": agency,
        "version": 1,
        "effective_from": "2026-01-01",
        "items": [
            {
                "code": "OSS-01",
                "name": "Tiếp nhận hồ sơ",
                "group": "B",
                "products": "1",
                "hours": "2",
            },
            {
                "code": "OSS-02",
                "name": "Thẩm định hồ sơ",
                "group": "C",
                "products": "1",
                "hours": "7",
            },
            {
                "code": "LEAD-01",
                "name": "Chỉ đạo, điều hành",
                "group": "A",
                "products": "1",
                "positions": ["head"],
            },
            *extra_items,
        ],
    }


def check_appended(outcomes: Sequence[object]) -> int:
    """Raise unless every outcome is an ``Appended``; returns how many."""
    refused = [o for o in outcomes if not isinstance(o, Appended)]
    if refused:
        raise RuntimeError(f"{len(refused)} envelope(s) refused, first: {refused[0]!r}")
    return len(outcomes)


# -- profiles -------------------------------------------------------------------------------

Step = tuple[str, str, int]  # (file suffix, function, depth in the call tree)

# The intake steps of ``LedgerService.submit_many`` every profile table starts with; each
# benchmark adds its handlers and its save path.
SERVICE_STEPS: list[Step] = [
    ("domain/service.py", "submit_many", 0),
    ("domain/service.py", "_sync", 1),
    ("domain/service.py", "_parse", 1),
    ("signing/facts.py", "read_fact", 2),
    ("ledger/store.py", "nonce_seqs", 1),
    ("ledger/store.py", "idempotency_seqs", 1),
    ("domain/service.py", "_check", 1),
    ("signing/facts.py", "verify_signature", 2),
]
BACKEND_FILES = {"sqlite": "ledger/sqlite.py", "postgres": "ledger/postgres.py"}


def steps_for(backend: str, steps: Sequence[Step]) -> list[Step]:
    """``steps`` without those in the other backends' recorder modules."""
    others = {f for b, f in BACKEND_FILES.items() if b != backend}
    return [s for s in steps if s[0] not in others]


def profile_rows(stats: Any, limit: int) -> list[dict[str, Any]]:
    """Top functions by self time from a ``pstats.Stats``."""
    raw: dict[Any, Any] = stats.stats
    total = sum(v[2] for v in raw.values()) or 1.0
    ordered = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:limit]
    return [
        {
            "function": f"{Path(k[0]).name}:{k[1]}({k[2]})",
            "calls": v[1],
            "self_s": round(v[2], 4),
            "self_share": round(v[2] / total, 3),
        }
        for k, v in ordered
    ]


def cumulative(stats: Any, names: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Cumulative seconds and calls of chosen functions, named ``(file suffix, function)``."""
    raw: dict[Any, Any] = stats.stats
    total = max((v[3] for v in raw.values()), default=0.0) or 1.0
    out: dict[str, dict[str, Any]] = {}
    for suffix, function in names:
        calls, seconds = 0, 0.0
        for (filename, _line, name), v in raw.items():
            if name == function and filename.endswith(suffix):
                calls += v[1]
                seconds += v[3]
        out[f"{suffix}:{function}"] = {
            "calls": calls,
            "cum_s": round(seconds, 4),
            "share": round(seconds / total, 3),
        }
    return out


def step_cumulative(stats: Any, steps: Sequence[Step]) -> dict[str, dict[str, Any]]:
    """``cumulative`` of ``steps``, in their order: a step never called shows 0 calls (a
    renamed function is seen, not hidden)."""
    return cumulative(stats, [(suffix, function) for suffix, function, _ in steps])


def profile_table(title: str, steps: Sequence[Step], rows: dict[str, dict[str, Any]]) -> str:
    """The rows of ``step_cumulative``, callees indented under their callers."""
    depth = {f"{suffix}:{function}": d for suffix, function, d in steps}
    return render_table(
        title,
        ["function (callees indented)", "calls", "cum s", "share"],
        [
            ["  " * depth.get(name, 0) + name, v["calls"], v["cum_s"], v["share"]]
            for name, v in rows.items()
        ],
    )
