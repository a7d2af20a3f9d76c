"""Shared helpers: statistics, tables, result files, throwaway databases, signed test data.

Every benchmark compares the code under test with a baseline measured in the same run on the
same machine (the machine is shared and noisy), and reports the ratio next to its target.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(
    args: Sequence[str],
    ready: str = "/v1/openapi.json",
    *,
    env: dict[str, str] | None = None,
    start_seconds: float = 60.0,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run a server command (``--port`` is added) in a child process from the repository's
    root, wait until ``GET ready`` answers below 500, and yield its base URL and the
    process. On leaving, it is stopped with SIGTERM and waited for: the caller may check
    ``process.returncode`` afterwards (the benches and the end-to-end test share this)."""
    import httpx2 as httpx

    port = free_port()
    child = subprocess.Popen(
        [*args, "--port", str(port)],
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if httpx.get(base + ready, timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not start: {child.stderr.read() if child.stderr else ''}"
                )
            time.sleep(0.2)
        yield base, child
    finally:
        child.terminate()
        child.wait(timeout=40)


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
