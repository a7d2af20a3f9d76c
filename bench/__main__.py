"""``python -m bench [--quick] [--only NAME] [--pg URL|none]``: run the benchmarks."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import api, append, cli, domain, feed, projections, proofs, verify
from bench.common import DEFAULT_PG, RESULTS_DIR, machine_info, pg_version, render_table, say

BENCHMARKS = ("append", "verify", "proofs", "domain", "projections", "api", "feed", "cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute in all)")
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--pg",
        default=DEFAULT_PG,
        help="PostgreSQL server URL on which kpi_bench_* databases are created "
        f"and dropped (default {DEFAULT_PG}); 'none' skips PostgreSQL",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    pg_url = None if args.pg.lower() == "none" else args.pg
    chosen = args.only or list(BENCHMARKS)
    info = machine_info()
    if pg_url is not None:
        info["postgresql"] = pg_version(pg_url)
    say(f"kpi-ledger benchmarks ({mode}): {info}")
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "append": lambda: append.run(mode, pg_url),
        "verify": lambda: verify.run(mode),
        "proofs": lambda: proofs.run(mode, pg_url),
        "domain": lambda: domain.run(mode, pg_url),
        "projections": lambda: projections.run(mode, pg_url),
        "api": lambda: api.run(mode, pg_url),
        "feed": lambda: feed.run(mode, pg_url),
        "cli": lambda: cli.run(mode),
    }
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in BENCHMARKS:
        if name in chosen:
            say(f"\n=== {name} ===")
            t0 = time.perf_counter()
            results[name] = runners[name]()
            say(f"({name}: {time.perf_counter() - t0:.0f}s)")
    say()
    say(
        render_table(
            "summary: ratio vs target",
            ["benchmark", "figure", "ratio", "target", ""],
            summary_rows(results),
        )
    )
    say(f"\ntotal {time.perf_counter() - start:.0f}s; results in {RESULTS_DIR}/")
    return 0


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for r in results.get("append", {}).get("recorder", []):
        target = r["target"]
        rows.append(
            [
                "append",
                f"{r['backend']} recorder, {r['per_transaction']}/txn",
                r["ratio"],
                "-" if target is None else f">= {target}",
                "-" if target is None else ("meets" if r["meets_target"] else "MISSES"),
            ]
        )
    for r in results.get("append", {}).get("application", []):
        rows.append(
            ["append", f"{r['backend']} submit_many vs Application.save", r["ratio"], "-", "-"]
        )
    if "verify" in results:
        v = results["verify"]
        a = v["all_cores"]
        rows.append(
            [
                "verify",
                f"all {v['workers']} cores vs bare Ed25519",
                a["ratio"],
                f">= {a['target']}",
                "meets" if a["meets_target"] else "MISSES",
            ]
        )
        rows.append(
            ["verify", "1 worker vs bare Ed25519 on 1 core", v["one_core"]["ratio"], "-", "-"]
        )
    for r in results.get("proofs", {}).get("backends", []):
        for kind in ("inclusion", "consistency"):
            p99 = r[f"{kind}_ms"]["p99"]
            rows.append(
                [
                    "proofs",
                    f"{r['backend']} {kind} p99 {p99:.2f} ms (ratio: p50/PK)",
                    r[f"{kind}_ratio_to_pk_select"],
                    f"< {r['target_ms']:.0f} ms",
                    "meets" if p99 < r["target_ms"] else "MISSES",
                ]
            )
    for r in results.get("domain", {}).get("rates", []):
        target = r["target"]
        rows.append(
            [
                "domain",
                f"{r['backend']} domain cmd/s vs raw appends/s, {r['per_call']}/call",
                r["ratio"],
                "-" if target is None else f">= {target}",
                "-" if target is None else ("meets" if r["meets_target"] else "MISSES"),
            ]
        )
    p = results.get("projections")
    if p is not None:
        for label in ("small", "large"):
            r = p["rebuild"][label]
            rows.append(
                [
                    "projections",
                    f"rebuild vs read+decode, {r['entries']:,} entries",
                    r["ratio"],
                    f">= {r['target']}",
                    "meets" if r["meets_target"] else "MISSES",
                ]
            )
        m = p["memory"]
        rows.append(
            [
                "projections",
                f"rebuild peak {m['large_mb']:.0f} MB (ratio: end/halfway)",
                m["growth"],
                f"< {p['targets']['peak_mb']:.0f} MB",
                "meets" if m["meets_target"] else "MISSES",
            ]
        )
        a = p["as_of"]
        rows.append(
            [
                "projections",
                f"as-of p95 {a['ms']['p95']:.1f} ms (ratio: p50/PK)",
                a["ratio_p50_to_pk_select"],
                f"< {p['targets']['as_of_p95_ms']:.0f} ms",
                "meets" if a["meets_target"] else "MISSES",
            ]
        )
    a = results.get("api")
    if a is not None:
        s = a["single"]
        rows.append(
            [
                "api",
                f"single writes {s['per_s']:,.0f}/s, p99 {s['ms']['p99']:.0f} ms (ratio: /bare)",
                s["ratio_to_bare"],
                ">= 1000/s, p99 < 100 ms",
                "meets" if s["meets_target"] else "MISSES",
            ]
        )
        b = a["batch"]
        rows.append(
            [
                "api",
                f"batch ingest {b['events_per_s']:,.0f} events/s (ratio: /bare req/s)",
                b["ratio_to_bare"],
                ">= 5000/s",
                "meets" if b["meets_target"] else "MISSES",
            ]
        )
        p = a["proofs"]
        rows.append(
            [
                "api",
                f"proofs p95 {p['ms']['p95']:.1f} ms (ratio: /bare req/s)",
                p["ratio_to_bare"],
                "p95 < 20 ms",
                "meets" if p["meets_target"] else "MISSES",
            ]
        )
    f = results.get("feed")
    if f is not None:
        for r in f["ratios"][1:]:
            most = r["subscribers"] == f["most_subscribers"]
            rows.append(
                [
                    "feed",
                    f"writes with {r['subscribers']} feed subscribers vs none",
                    r["ratio"],
                    f">= {f['target']}" if most else "-",
                    ("meets" if f["meets_target"] else "MISSES") if most else "-",
                ]
            )
    c = results.get("cli")
    if c is not None:
        for name, label in (("help", "kpi-ledger --help"), ("score", "kpi-ledger score (demo)")):
            r = c["figures"][name]
            rows.append(
                [
                    "cli",
                    f"{label} {r['median_s'] * 1000:.0f} ms (ratio: /python -c pass)",
                    r["ratio"],
                    f"< {r['target_s'] * 1000:.0f} ms",
                    "meets" if r["meets_target"] else "MISSES",
                ]
            )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
