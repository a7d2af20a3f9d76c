"""The benchmarks run end to end in a tiny mode (no timing assertions: the machine is noisy).

Each benchmark's ``run`` is called with a few hundred events, SQLite only except the append
and domain benchmarks, which also run on the ``pg_url`` database (fresh schemas inside it).
Checked: the shape of the results, counts against the scale, positive rates, verdicts that
follow from the ratios, the verifier's verdict, and that every step a profile table lists was
called (a renamed function shows up as 0 calls).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import append, domain, projections, proofs, verify
from bench.common import SERVICE_STEPS, Step, steps_for


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert row[key] > 0, (key, row)


def _verdict(row: dict[str, Any]) -> None:
    """``meets_target`` is what the ratio says, or None without a target."""
    target = row["target"]
    assert row["meets_target"] == (None if target is None else row["ratio"] >= target), row


def _every_step_called(cumulative: dict[str, Any], backend: str, steps: list[Step]) -> None:
    """The profile lists the steps for ``backend`` (not the other backend's recorder), in
    order, each called at least once."""
    listed = steps_for(backend, steps)
    assert list(cumulative) == [f"{f}:{n}" for f, n, _ in listed]
    assert len(listed) == len(steps) - 1  # the other backend's insert_events
    assert [f for f, n, _ in listed].count(f"ledger/{backend}.py") == 1
    assert steps[: len(SERVICE_STEPS)] == SERVICE_STEPS
    never = [name for name, row in cumulative.items() if row["calls"] == 0]
    assert never == [], f"{backend}: steps never called (renamed?): {never}"


def test_append_bench_on_sqlite_and_postgres(pg_url: str, tmp_path: Path) -> None:
    result = append.run("tiny", pg_url, pg_is_database=True, results_dir=tmp_path)

    recorder = result["recorder"]
    assert {(r["backend"], r["per_transaction"]) for r in recorder} == {
        ("sqlite", 1),
        ("sqlite", 100),
        ("postgres", 1),
        ("postgres", 100),
    }
    scale = append.SCALES["tiny"]
    for row in recorder:
        _positive(row, "plain_events_per_s", "sealed_events_per_s", "ratio")
        batched = row["per_transaction"] == 100
        assert row["target"] == (append.TARGET_100 if batched else None)
        assert row["events_timed"] == (scale.batched if batched else scale.single)
        _verdict(row)
    assert {r["backend"] for r in result["application"]} == {"sqlite", "postgres"}
    for row in result["application"]:
        _positive(row, "plain_events_per_s", "sealed_events_per_s", "ratio", "replay_check_us")
        assert row["events_timed"] == scale.app_events
    assert set(result["application_profile"]) == {"sqlite", "postgres"}
    for backend, profile in result["application_profile"].items():
        assert profile["envelopes"] == scale.profiled
        _every_step_called(profile["cumulative"], backend, append.APP_STEPS)
    _positive(
        result["step_costs_us"],
        "parse_envelope_and_payload",
        "ed25519_verify",
        "attestation_handler",
        "sealer_python",
    )
    assert 600 <= result["envelope_bytes"]["min"] <= result["envelope_bytes"]["max"] <= 900
    assert json.loads((tmp_path / "append.json").read_text())["benchmark"] == "append"


def test_verify_bench_reports_ok(tmp_path: Path) -> None:
    result = verify.run("tiny", results_dir=tmp_path)

    assert result["report_ok"] is True, result["problems"]
    assert result["entries"] == verify.SCALES["tiny"].entries
    assert result["checkpoints"] >= 1
    for section in ("all_cores", "one_core"):
        _positive(result[section], "verify_entries_per_s", "bare_signatures_per_s", "ratio")
    assert result["all_cores"]["target"] == verify.TARGET
    assert (tmp_path / "verify.json").is_file()


def test_proofs_bench_on_sqlite(tmp_path: Path) -> None:
    result = proofs.run("tiny", None, results_dir=tmp_path)

    (row,) = result["backends"]
    assert row["backend"] == "sqlite"
    assert row["size"] == proofs.SCALES["tiny"].entries
    assert row["proofs_checked"] > 0
    for kind in ("inclusion_ms", "consistency_ms", "pk_select_ms"):
        assert {"p50", "p95", "p99"} <= row[kind].keys()
        _positive(row[kind], "p50", "p95", "p99")
    _positive(
        row, "inclusion_ratio_to_pk_select", "consistency_ratio_to_pk_select", "fill_events_per_s"
    )
    assert row["inclusion_nodes"]["max"] <= 2 * row["size"].bit_length()
    assert (tmp_path / "proofs.json").is_file()


def test_domain_bench_on_sqlite_and_postgres(pg_url: str, tmp_path: Path) -> None:
    result = domain.run("tiny", pg_url, pg_is_database=True, results_dir=tmp_path)

    scale = domain.SCALES["tiny"]
    workload = result["workload"]
    kinds = workload["kinds"]
    assert workload["employees"] == scale.employees
    assert kinds["work.assigned"] == scale.employees * scale.items
    assert kinds["assessment.supervisor_assessed"] == scale.employees
    # the tiny stream holds every kind of command, so every handler row of the profile applies
    assert set(kinds) == {
        "work.assigned",
        "work.declared",
        "work.approved",
        "work.rejected",
        "work.delayed",
        "work.quality_failed",
        "assessment.supervisor_assessed",
        "score.adjustment_proposed",
        "score.adjustment_approved",
    }
    commands = workload["commands"]
    assert scale.single < commands <= scale.profiled
    rates = result["rates"]
    assert {(r["backend"], r["per_call"]) for r in rates} == {
        ("sqlite", domain.BATCH),
        ("sqlite", 1),
        ("postgres", domain.BATCH),
        ("postgres", 1),
    }
    for row in rates:
        _positive(row, "domain_commands_per_s", "raw_appends_per_s", "ratio")
        batched = row["per_call"] == domain.BATCH
        assert row["target"] == (domain.TARGET if batched else None)
        assert row["commands_timed"] == (commands if batched else scale.single)
        assert row["repetitions"] == scale.reps == len(row["domain_samples"])
        _verdict(row)
    assert set(result["breakdown"]) == {"sqlite", "postgres"}
    for backend, breakdown in result["breakdown"].items():
        assert breakdown["aggregate_reads"]["cache"] > 0
        assert {t: h["calls"] for t, h in breakdown["handlers"].items()} == kinds
        assert breakdown["profile"]["commands"] == commands
        _every_step_called(breakdown["profile"]["cumulative"], backend, domain.PROFILE_STEPS)
    assert json.loads((tmp_path / "domain.json").read_text())["benchmark"] == "domain"


def test_projections_bench_on_a_small_demo_log(tmp_path: Path) -> None:
    result = projections.run("tiny", results_dir=tmp_path, cache_dir=tmp_path)

    logs = result["logs"]
    assert logs["small"]["entries"] == logs["large"]["entries"] > 500
    from bench.projections import BENCH_START

    folder = tmp_path / f"demo-12x2-seed1-{BENCH_START}-{_demo_digest()}"
    assert (folder / "done.json").exists()
    for label in ("small", "large"):
        r = result["rebuild"][label]
        assert r["entries"] == logs[label]["entries"]
        for rep in r["reps"]:
            _positive(rep, "baseline_rate", "rebuild_rate", "ratio", "rebuild_peak_mb")
        assert r["meets_target"] == (r["ratio"] >= projections.TARGET_RATIO)
    memory = result["memory"]
    assert memory["meets_target"] == (memory["large_mb"] < projections.TARGET_MB)
    along = result["rebuild"]["large"]["peak_along"]
    assert [done for done, _ in along] == sorted(done for done, _ in along)
    assert along[-1][0] == logs["large"]["entries"]
    assert [mb for _, mb in along] == sorted(mb for _, mb in along)  # a peak never falls
    assert memory["growth"] == memory["large_mb"] / memory["large_halfway_mb"] >= 1
    as_of = result["as_of"]
    assert as_of["samples"] == projections.SCALES["tiny"].samples
    assert 0 < as_of["ms"]["p50"] <= as_of["ms"]["p95"] <= as_of["ms"]["max"]
    assert as_of["meets_target"] == (as_of["ms"]["p95"] < projections.TARGET_P95_MS)
    assert json.loads((tmp_path / "projections.json").read_text())["benchmark"] == "projections"
    # a second run reads the cached log instead of generating it again
    again = projections.run("tiny", results_dir=tmp_path, cache_dir=tmp_path)
    assert again["logs"]["small"]["generated"] == logs["small"]["generated"]


def _demo_digest() -> str:
    import hashlib

    return hashlib.sha256((projections.ROOT / "api" / "demo.py").read_bytes()).hexdigest()[:12]


def test_api_bench_drives_the_service_and_a_bare_endpoint(pg_url: str, tmp_path: Path) -> None:
    from bench import api

    result = api.run("tiny", pg_url, results_dir=tmp_path)
    scale = api.SCALES["tiny"]
    assert result["bare"]["requests"] == result["single"]["requests"] == scale.single
    assert result["batch"]["events"] == scale.batches * api.BATCH_SIZE
    assert result["proofs"]["requests"] == scale.proofs
    for part in ("single", "batch", "proofs"):
        assert result[part]["ratio_to_bare"] > 0
        assert 0 < result[part]["ms"]["p50"] <= result[part]["ms"]["max"]
    single = result["single"]
    assert single["meets_target"] == (
        single["per_s"] >= api.TARGET_SINGLE and single["ms"]["p99"] < api.TARGET_SINGLE_P99_MS
    )
    assert json.loads((tmp_path / "api.json").read_text())["benchmark"] == "api"


def test_feed_bench_writes_while_subscribers_follow(pg_url: str, tmp_path: Path) -> None:
    from bench import feed

    result = feed.run("tiny", pg_url, results_dir=tmp_path)
    scale = feed.SCALES["tiny"]
    assert [p["subscribers"] for p in result["phases"]] == list(scale.subscribers) * scale.rounds
    for phase in result["phases"]:
        assert phase["requests"] == scale.writes
        assert phase["per_s"] > 0 and phase["server_cpu_ms_per_write"] > 0
        # every subscriber had every new position (the bench checks order and count itself)
        assert phase.get("events_delivered", 0) == phase["subscribers"] * scale.writes
    ratios = result["ratios"]
    assert [r["subscribers"] for r in ratios] == list(scale.subscribers)
    assert ratios[0]["ratio"] == 1.0 and all(r["ratio"] > 0 for r in ratios)
    assert result["most_subscribers"] == scale.subscribers[-1]
    assert result["meets_target"] == (ratios[-1]["ratio"] >= feed.TARGET)
    assert json.loads((tmp_path / "feed.json").read_text())["benchmark"] == "feed"


def test_cli_bench_times_help_version_and_a_score_on_a_small_demo(tmp_path: Path) -> None:
    from bench import cli

    result = cli.run("tiny", results_dir=tmp_path, cache_dir=tmp_path)
    figures = result["figures"]
    assert set(figures) == {"baseline", "help", "version", "score"}
    base = figures["baseline"]["median_s"]
    for row in figures.values():
        assert row["runs"] == cli.SCALES["tiny"].reps
        assert 0 < row["median_s"] <= row["max_s"]
        assert row["ratio"] == row["median_s"] / base
    for name, target in (("help", cli.TARGET_HELP_S), ("score", cli.TARGET_SCORE_S)):
        assert figures[name]["meets_target"] == (figures[name]["median_s"] < target)
    who = result["score_of"]
    assert result["score_output"].startswith(
        f"{who['employee']} {who['period']} as of log position"
    )
    assert result["version_output"].startswith("kpi-ledger ")
    assert json.loads((tmp_path / "cli.json").read_text())["benchmark"] == "cli"
