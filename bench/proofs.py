"""proofs: inclusion and consistency proof latency in a large sealed log.

The log is filled through the sealed recorder itself (``insert_events``, 1,000 small events per
transaction), so every table — events, ``log_entries``, ``log_nodes`` — holds exactly what the
ledger writes. PostgreSQL then gets an ``ANALYZE`` (what autovacuum would do on its own
schedule), so the planner sees the table sizes. Then, for random ``i`` / ``m``,
``inclusion_proof(i, size)`` and ``consistency_proof(m, size)`` are timed one call at a time
(p50/p95/p99, target < 5 ms), with the number of stored nodes each proof reads (leaf hashes
from ``log_entries``, inner nodes from ``log_nodes``). Baseline in the same run: a single-row
primary-key ``SELECT`` on ``log_nodes`` through the same connection path; ratio = proof
p50 / baseline p50 (how many single-row lookups a proof costs). A sample of proofs is checked
against the root (``verify_inclusion`` / ``verify_consistency``).
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from bench.common import (
    libpq_url,
    median,
    open_store,
    percentile,
    pg_database,
    render_table,
    say,
    sqlite_url,
    write_result,
)
from ledger.postgres import SealedPostgresRecorder
from ledger.sqlite import SealedSQLiteRecorder
from signing.merkle import (
    consistency_proof_ranges,
    inclusion_proof_ranges,
    nodes_needed,
    verify_consistency,
    verify_inclusion,
)

NAME = "proofs"
TARGET_MS = 5.0
FILL_BATCH = 1000
TOPIC = "bench.proofs:Filler"
CHECKED = 25  # proofs of each kind verified against the root


@dataclass(frozen=True)
class Scale:
    entries: int
    samples: int


SCALES = {
    "full": Scale(entries=1_000_000, samples=1000),
    "quick": Scale(entries=100_000, samples=300),
    "tiny": Scale(entries=3_000, samples=50),
}

Sealed = SealedSQLiteRecorder | SealedPostgresRecorder


def fill(recorder: Sealed, entries: int, label: str) -> float:
    """Append ``entries`` small events, ``FILL_BATCH`` per transaction; returns seconds."""
    start = time.perf_counter()
    done = recorder.log_size()
    report_every = max(entries // 5, FILL_BATCH)
    while done < entries:
        count = min(FILL_BATCH, entries - done)
        batch = [
            StoredEvent(uuid.uuid4(), 1, TOPIC, b'{"n":%d}' % (done + k)) for k in range(count)
        ]
        recorder.insert_events(batch)
        done += count
        if done % report_every < FILL_BATCH and done < entries:
            rate = done / (time.perf_counter() - start)
            say(f"proofs: {label} filled {done:,} / {entries:,} ({rate:,.0f} events/s)")
    return time.perf_counter() - start


def pk_select(recorder: Sealed) -> Callable[[int, int], bytes]:
    """One row by primary key from ``log_nodes``, through the recorder's connection path."""
    if isinstance(recorder, SealedSQLiteRecorder):
        sqlite_recorder = recorder

        def sqlite_select(level: int, idx: int) -> bytes:
            with sqlite_recorder.datastore.transaction(commit=False) as c:
                c.execute("SELECT hash FROM log_nodes WHERE level = ? AND idx = ?", (level, idx))
                return bytes(c.fetchone()[0])

        return sqlite_select
    pg_recorder = recorder
    statement = SQL("SELECT hash FROM {}.log_nodes WHERE level = %s AND idx = %s").format(
        Identifier(pg_recorder.datastore.schema)
    )

    def pg_select(level: int, idx: int) -> bytes:
        with pg_recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (level, idx), prepare=True)
            row = curs.fetchone()
            assert row is not None
            return bytes(row["hash"])

    return pg_select


def ms(fn: Callable[..., object], *args: Any) -> float:
    """Milliseconds of one call."""
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def measure(recorder: Sealed, size: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    indexes = [rng.randrange(size) for _ in range(samples)]
    olds = [rng.randrange(1, size) for _ in range(samples)]
    nodes = [(1, rng.randrange(size // 2)) for _ in range(samples)]
    select = pk_select(recorder)
    # warm the connection paths and prepared statements alike
    for k in range(min(20, samples)):
        select(*nodes[k])
        recorder.inclusion_proof(indexes[k], size)
        recorder.consistency_proof(olds[k], size)
    # interleave the three kinds so that noise spreads evenly over them
    baseline: list[float] = []
    inclusion: list[float] = []
    consistency: list[float] = []
    for k in range(samples):
        baseline.append(ms(select, *nodes[k]))
        inclusion.append(ms(recorder.inclusion_proof, indexes[k], size))
        consistency.append(ms(recorder.consistency_proof, olds[k], size))
    root = recorder.root(size)
    leaves = recorder.read_nodes([(0, i) for i in indexes[:CHECKED]])
    for i in indexes[:CHECKED]:
        verify_inclusion(leaves[(0, i)], i, size, recorder.inclusion_proof(i, size), root)
    for m in olds[:CHECKED]:
        verify_consistency(m, size, recorder.consistency_proof(m, size), recorder.root(m), root)
    base = median(baseline)
    return {
        "size": size,
        "samples": samples,
        "pk_select_ms": summary(baseline),
        "inclusion_ms": summary(inclusion),
        "consistency_ms": summary(consistency),
        "inclusion_ratio_to_pk_select": median(inclusion) / base,
        "consistency_ratio_to_pk_select": median(consistency) / base,
        "inclusion_nodes": node_counts([inclusion_proof_ranges(i, size) for i in indexes]),
        "consistency_nodes": node_counts([consistency_proof_ranges(m, size) for m in olds]),
        "proofs_checked": 2 * min(CHECKED, samples),
        "target_ms": TARGET_MS,
        "meets_target": max(percentile(inclusion, 99), percentile(consistency, 99)) < TARGET_MS,
    }


def node_counts(all_ranges: list[list[tuple[int, int]]]) -> dict[str, float]:
    """Stored nodes read per proof: all, and how many are leaf hashes (``log_entries``)."""
    totals, leaves = [], []
    for ranges in all_ranges:
        needed = nodes_needed(ranges)
        totals.append(float(len(needed)))
        leaves.append(float(sum(1 for level, _ in needed if level == 0)))
    return {
        "median": median(totals),
        "max": max(totals),
        "min": min(totals),
        "leaf_rows_median": median(leaves),
        "proof_hashes_median": median([float(len(r)) for r in all_ranges]),
    }


# -- backends -----------------------------------------------------------------------------------


@contextmanager
def sqlite_log(folder: Path) -> Iterator[str]:
    yield sqlite_url(folder, "proofs.db")


def analyze(url: str, recorder: SealedPostgresRecorder) -> None:
    schema = recorder.datastore.schema
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for table in ("log_entries", "log_nodes", recorder.events_table_name):
            conn.execute(SQL("ANALYZE {}.{}").format(Identifier(schema), Identifier(table)))


def bench_backend(
    backend: str, database: AbstractContextManager[str], scale: Scale
) -> dict[str, Any]:
    with database as url:
        store = open_store(url, sealed=True)
        try:
            recorder = store.recorder
            assert isinstance(recorder, SealedSQLiteRecorder | SealedPostgresRecorder)
            seconds = fill(recorder, scale.entries, backend)
            if isinstance(recorder, SealedPostgresRecorder):
                analyze(url, recorder)
            size = recorder.log_size()
            say(f"proofs: {backend} log of {size:,} entries filled in {seconds:.1f}s; timing ...")
            row = measure(recorder, size, scale.samples, seed=size)
        finally:
            store.close()
    row.update(
        {"backend": backend, "fill_seconds": seconds, "fill_events_per_s": scale.entries / seconds}
    )
    return row


def run(
    mode: str = "full", pg_url: str | None = None, *, results_dir: Path | None = None
) -> dict[str, Any]:
    scale = SCALES[mode]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kpi-bench-proofs-") as tmp:
        rows.append(bench_backend("sqlite", sqlite_log(Path(tmp)), scale))
    if pg_url is not None:
        rows.append(bench_backend("postgres", pg_database(pg_url), scale))
    result = {
        "mode": mode,
        "entries": scale.entries,
        "fill_per_transaction": FILL_BATCH,
        "backends": rows,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    lines = []
    for r in result["backends"]:
        for kind in ("inclusion", "consistency"):
            t = r[f"{kind}_ms"]
            n = r[f"{kind}_nodes"]
            lines.append(
                [
                    r["backend"],
                    kind,
                    t["p50"],
                    t["p95"],
                    t["p99"],
                    r["pk_select_ms"]["p50"],
                    r["pk_select_ms"]["p99"],
                    r[f"{kind}_ratio_to_pk_select"],
                    f"{n['median']:.0f} ({n['leaf_rows_median']:.0f} leaf)",
                    f"< {r['target_ms']:.0f} ms",
                    "meets" if t["p99"] < r["target_ms"] else "MISSES",
                ]
            )
    say()
    say(
        render_table(
            f"proofs at {result['entries']:,} entries (ms; ratio = proof p50 / PK select p50;"
            " a high PK p99 means the machine was busy)",
            [
                "backend",
                "proof",
                "p50",
                "p95",
                "p99",
                "pk p50",
                "pk p99",
                "ratio",
                "nodes read",
                "target",
                "",
            ],
            lines,
        )
    )
    for r in result["backends"]:
        say(
            f"  {r['backend']}: filled at {r['fill_events_per_s']:,.0f} events/s "
            f"({FILL_BATCH} per transaction) in {r['fill_seconds']:.0f}s"
        )
