"""projections: rebuilding the read models, as-of replay, and the memory a rebuild needs.

Workload: the demo history (``api/demo.py``), generated through the ledger service on SQLite:
a province's agencies and units, postings and transfers, leave, the month's work items
(assignments, declarations with evidence, approvals, rejections, quality failures, delays),
assessments and adjustments, closes carrying their snapshot, appeals and their rulings,
discipline and its annulment, HR decisions. It is seeded, so every run reads the same log.

* ``full``: 2,250 employees × 12 months, about 1,026,000 entries; a second log of 225
  employees × 12 months (about 100,000 entries) for the memory comparison.
* ``quick``: 120 × 6 (about 27,000) and 30 × 6. ``tiny`` (the smoke test): 12 × 2 and 12 × 2.

A log is generated once (the full one takes about 10 minutes here) and kept in
``bench/results/cache/`` under its demo options and a hash of ``api/demo.py``; a log whose
generation did not finish is generated again.

1. **Rebuild throughput.** Each repetition runs three fresh processes one after the other:
   the baseline, ``projections.runners.rebuild`` (empty the views, fold the whole log, as
   ``kpi-ledger rebuild evaluations`` does), the baseline again. The baseline is plain
   ``eventsourcing``: an ``Application`` with the ledger's mapper reads every notification
   with ``select_notifications`` in pages of 10,000 and turns each into its domain event with
   the mapper, and does nothing else. Ratio = rebuild entries/s ÷ the mean of the two
   baselines' entries/s (target ≥ 0.5).
2. **Memory.** The peak resident set (``VmHWM``) of each rebuild process, on both logs,
   beside the baseline process's, and the large rebuild's peak after every batch: target
   < 300 MB on the large log, and it must not grow with the log (the peak at the end ÷ the
   peak halfway, near 1; the small log has a tenth of the people, so the two logs' peaks
   differ by the size of the organisation, not only of the log).
3. **As-of latency.** On the large log, with the views just rebuilt: random (employee,
   period, as-of) triples, the as-of a random log position between the period's first fact
   and the head (one in four given as a time instead), each ``Replay.score`` timed alone in
   a fresh ``Replay``; p50/p95/p99 (target p95 < 50 ms). Baseline: a single-row
   primary-key ``SELECT`` on ``log_entries`` through the same connection, interleaved;
   ratio = as-of p50 ÷ baseline p50.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import multiprocessing
import random
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, ROOT, median, percentile, render_table, say, write_result

NAME = "projections"
TARGET_RATIO = 0.5
TARGET_P95_MS = 50.0
TARGET_MB = 300.0
PAGE = 10_000
CACHE_DIR = RESULTS_DIR / "cache"


@dataclass(frozen=True)
class Scale:
    employees: int
    months: int
    small_employees: int  # the second, smaller log (memory comparison)
    reps: int  # rebuild repetitions on the small log (the large one: 1)
    samples: int  # as-of scores timed


SCALES = {
    "full": Scale(employees=2250, months=12, small_employees=225, reps=3, samples=400),
    "quick": Scale(employees=120, months=6, small_employees=30, reps=2, samples=150),
    "tiny": Scale(employees=12, months=2, small_employees=12, reps=1, samples=20),
}


# -- the logs --------------------------------------------------------------------------------


BENCH_START = "2026-01"  # a fixed start: the cached log must not depend on the day it was made


def demo_log(employees: int, months: int, cache_dir: Path) -> tuple[str, dict[str, Any]]:
    """The SQLite URL of the demo log with these options, generated if not cached."""
    digest = hashlib.sha256((ROOT / "api" / "demo.py").read_bytes()).hexdigest()[:12]
    folder = cache_dir / f"demo-{employees}x{months}-seed1-{BENCH_START}-{digest}"
    done = folder / "done.json"
    url = f"sqlite:///{folder / 'ledger.db'}"
    if done.exists():
        info = json.loads(done.read_text())
        say(f"projections: cached log {folder.name}: {info['entries']:,} entries")
        return url, info
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted generation
    folder.mkdir(parents=True)
    from api.demo import DemoOptions, run_demo
    from ledger.config import parse_database
    from ledger.home import LedgerHome

    say(f"projections: generating the demo log {employees} × {months} (cached for later runs)")
    result = run_demo(
        parse_database(url),
        LedgerHome(folder / "home"),
        DemoOptions(employees=employees, months=months, start=BENCH_START),
        progress=False,
    )
    info = {
        "entries": result.entries,
        "employees": employees,
        "months": months,
        "seconds": round(result.seconds, 1),
        "bytes": result.database_bytes,
        "commit": _commit(),
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    done.write_text(json.dumps(info, indent=2) + "\n")
    say(f"projections: generated {result.entries:,} entries in {result.seconds:,.0f} s")
    return url, info


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# -- the work, each in a fresh process -------------------------------------------------------


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """This process's peak resident set: ``VmHWM`` (Linux), which starts afresh at ``exec``;
    ``ru_maxrss`` would carry over the parent's peak into a spawned child."""
    found = _status_mb("VmHWM")
    if found is not None:
        return found
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: KiB


def baseline_read(url: str) -> dict[str, Any]:
    """Plain ``eventsourcing``: read and decode every notification, nothing else."""
    from ledger.config import parse_database
    from projections.runners import LogReader

    app = LogReader(env=dict(parse_database(url).env))
    try:
        start, count = 1, 0
        began = time.perf_counter()
        while True:
            page = app.recorder.select_notifications(start, PAGE)
            if not page:
                break
            for stored in page:
                app.mapper.to_domain_event(stored)
            count += len(page)
            start = page[-1].id + 1
        seconds = time.perf_counter() - began
    finally:
        app.close()
    return {"entries": count, "seconds": seconds, "rate": count / seconds, "peak_mb": _peak_mb()}


def rebuild_views(url: str) -> dict[str, Any]:
    """``kpi-ledger rebuild evaluations``: empty the views, fold the whole log."""
    from ledger.config import parse_database
    from projections.runners import rebuild

    along: list[tuple[int, float]] = []  # (entries folded, peak MB so far), after each batch

    def progress(done: int) -> None:
        along.append((done, _peak_mb()))

    began = time.perf_counter()
    count = rebuild(parse_database(url), progress=progress)
    seconds = time.perf_counter() - began
    return {
        "entries": count,
        "seconds": seconds,
        "rate": count / seconds,
        "peak_mb": max([_peak_mb(), *(mb for _, mb in along)]),
        "peak_along": along,
    }


def in_child(fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a new process (its own peak memory, nothing cached from before)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        result: dict[str, Any] = pool.submit(fn, *args).result()
    return result


def throughput(url: str, reps: int, label: str) -> dict[str, Any]:
    rows = []
    for rep in range(reps):
        before = in_child(baseline_read, url)
        built = in_child(rebuild_views, url)
        after = in_child(baseline_read, url)
        if not before["entries"] == built["entries"] == after["entries"]:
            raise RuntimeError(f"entry counts differ: {before}, {built}, {after}")
        base = (before["rate"] + after["rate"]) / 2
        rows.append(
            {
                "baseline_rate": base,
                "rebuild_rate": built["rate"],
                "ratio": built["rate"] / base,
                "rebuild_seconds": built["seconds"],
                "rebuild_peak_mb": built["peak_mb"],
                "baseline_peak_mb": max(before["peak_mb"], after["peak_mb"]),
                "peak_along": built["peak_along"],
            }
        )
        say(
            f"projections: {label} rep {rep + 1}: baseline {base:,.0f}/s, rebuild"
            f" {built['rate']:,.0f}/s ({built['seconds']:,.1f} s), ratio {rows[-1]['ratio']:.3f},"
            f" rebuild peak {built['peak_mb']:,.0f} MB"
        )
    return {
        "entries": built["entries"],
        "reps": rows,
        "ratio": median([r["ratio"] for r in rows]),
        "rebuild_rate": median([r["rebuild_rate"] for r in rows]),
        "baseline_rate": median([r["baseline_rate"] for r in rows]),
        "rebuild_peak_mb": max(r["rebuild_peak_mb"] for r in rows),
        "baseline_peak_mb": max(r["baseline_peak_mb"] for r in rows),
        "peak_along": rows[-1]["peak_along"],
    }


# -- as-of --------------------------------------------------------------------------------


def as_of_latency(url: str, samples: int, seed: int = 7) -> dict[str, Any]:
    from ledger.config import parse_database
    from projections.replay import Replay, ReplayError
    from projections.runners import close_view, open_view

    view = open_view(parse_database(url))
    try:
        rng = random.Random(seed)
        head = view.head()[0]
        subjects = view.keys("score")
        firsts = _first_positions(view)
        times: list[float] = []
        leaders: list[float] = []
        base: list[float] = []
        refused = 0
        by_time = 0
        while len(times) < samples:
            key = rng.choice(subjects)
            employee, period = key.split("/", 1)
            as_of: int | str = rng.randint(firsts.get(key, 0), head)
            if rng.random() < 0.25:
                as_of = view.recorded_at(int(as_of)) or as_of
            base.append(_ms(_pk_select, view, rng.randint(0, head)))
            replay = Replay(view)
            began = time.perf_counter()
            try:
                result = replay.score(employee, period, as_of=as_of)
            except ReplayError:
                refused += 1  # e.g. as of a moment before the person was posted
                continue
            elapsed = (time.perf_counter() - began) * 1000
            times.append(elapsed)
            by_time += isinstance(as_of, str)
            if any(line.subject == "leader" for line in result.trace):
                leaders.append(elapsed)  # a leader's score replays their staff's too
    finally:
        close_view(view)
    return {
        "samples": len(times),
        "given_as_time": by_time,
        "refused": refused,
        "ms": _summary(times),
        "leaders": len(leaders),
        "leader_ms": _summary(leaders) if leaders else None,
        "pk_select_ms": _summary(base),
        "ratio_p50_to_pk_select": percentile(times, 50) / percentile(base, 50),
        "meets_target": percentile(times, 95) < TARGET_P95_MS,
    }


def _first_positions(view: Any) -> dict[str, int]:
    """Each employee period's first indexed position (where its facts start)."""
    with view._cursor(commit=False) as c:
        view._exec(c, "SELECT subject, MIN(seq) AS seq FROM {s}kpi_view_streams GROUP BY subject")
        return {r["subject"]: int(r["seq"]) for r in c.fetchall()}


def _pk_select(view: Any, seq: int) -> None:
    with view._cursor(commit=False) as c:
        view._exec(c, "SELECT leaf_hash FROM {s}log_entries WHERE seq = ?", (seq,))
        c.fetchone()


def _ms(fn: Any, *args: Any) -> float:
    began = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - began) * 1000


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


# -- the benchmark ---------------------------------------------------------------------------


def run(
    mode: str = "full",
    pg_url: str | None = None,  # unused: the logs are SQLite, the embedded default
    *,
    results_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    scale = SCALES[mode]
    cache = CACHE_DIR if cache_dir is None else cache_dir
    small_url, small_info = demo_log(scale.small_employees, scale.months, cache)
    large_url, large_info = demo_log(scale.employees, scale.months, cache)
    small = throughput(small_url, scale.reps, "small log")
    large = throughput(large_url, 1, "large log")
    as_of = as_of_latency(large_url, scale.samples)
    # growth with the log: the peak once the whole log is folded over the peak halfway
    along = large["peak_along"]
    half = next((mb for done, mb in along if done >= large["entries"] // 2), along[-1][1])
    growth = large["rebuild_peak_mb"] / half
    result = {
        "mode": mode,
        "scale": asdict(scale),
        "logs": {"small": small_info, "large": large_info},
        "rebuild": {"small": small, "large": large},
        "memory": {
            "small_mb": small["rebuild_peak_mb"],
            "large_mb": large["rebuild_peak_mb"],
            "large_halfway_mb": half,
            "growth": growth,
            "meets_target": large["rebuild_peak_mb"] < TARGET_MB,
        },
        "as_of": as_of,
        "targets": {"ratio": TARGET_RATIO, "as_of_p95_ms": TARGET_P95_MS, "peak_mb": TARGET_MB},
    }
    for part in (small, large):
        part["target"] = TARGET_RATIO
        part["meets_target"] = part["ratio"] >= TARGET_RATIO
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    rows = []
    for label in ("small", "large"):
        r = result["rebuild"][label]
        rows.append(
            [
                label,
                r["entries"],
                r["baseline_rate"],
                r["rebuild_rate"],
                r["ratio"],
                r["baseline_peak_mb"],
                r["rebuild_peak_mb"],
            ]
        )
    say(
        render_table(
            "rebuild from zero vs plain eventsourcing read+decode (entries/s; peak MB per process)",
            ["log", "entries", "baseline/s", "rebuild/s", "ratio", "base MB", "rebuild MB"],
            rows,
        )
    )
    along = result["rebuild"]["large"]["peak_along"]
    marks = [
        along[min(len(along) - 1, round(f * (len(along) - 1)))] for f in (0.1, 0.25, 0.5, 0.75, 1)
    ]
    say(
        render_table(
            "peak memory while rebuilding the large log (MB, after the batch that reached n)",
            ["entries folded", "peak MB"],
            [[done, mb] for done, mb in marks],
        )
    )
    a = result["as_of"]
    lines = [["all", a["samples"], *(a["ms"][k] for k in ("p50", "p95", "p99", "max"))]]
    if a["leader_ms"]:
        lines.append(
            ["leaders", a["leaders"], *(a["leader_ms"][k] for k in ("p50", "p95", "p99", "max"))]
        )
    lines.append(
        ["PK select", a["samples"], *(a["pk_select_ms"][k] for k in ("p50", "p95", "p99", "max"))]
    )
    say(
        render_table(
            f"as-of score latency on {result['rebuild']['large']['entries']:,} entries (ms;"
            f" {a['given_as_time']} given as a time, {a['refused']} refused)",
            ["what", "n", "p50", "p95", "p99", "max"],
            lines,
        )
    )
