"""The benchmarks run end to end in a tiny mode (no timing assertions: the machine is noisy).

Each benchmark's ``run`` is called with a few hundred events, SQLite only except the append
and domain benchmarks, which also run on the ``pg_url`` database (fresh schemas inside it).
Only the shape of the results, positive rates and the verifier's verdict are checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import append, domain, proofs, verify


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert row[key] > 0, (key, row)


def test_append_bench_on_sqlite_and_postgres(pg_url: str, tmp_path: Path) -> None:
    result = append.run("tiny", pg_url, pg_is_database=True, results_dir=tmp_path)

    recorder = result["recorder"]
    assert {(r["backend"], r["per_transaction"]) for r in recorder} == {
        ("sqlite", 1),
        ("sqlite", 100),
        ("postgres", 1),
        ("postgres", 100),
    }
    for row in recorder:
        assert {
            "plain_events_per_s",
            "sealed_events_per_s",
            "ratio",
            "target",
            "meets_target",
        } <= row.keys()
        _positive(row, "plain_events_per_s", "sealed_events_per_s", "ratio")
        assert row["target"] == (append.TARGET_100 if row["per_transaction"] == 100 else None)
    assert {r["backend"] for r in result["application"]} == {"sqlite", "postgres"}
    for row in result["application"]:
        _positive(row, "plain_events_per_s", "sealed_events_per_s", "ratio", "replay_check_us")
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
    result = domain.run("quick", pg_url, pg_is_database=True, results_dir=tmp_path)

    rates = result["rates"]
    assert {(r["backend"], r["per_call"]) for r in rates} == {
        ("sqlite", domain.BATCH),
        ("sqlite", 1),
        ("postgres", domain.BATCH),
        ("postgres", 1),
    }
    for row in rates:
        _positive(row, "domain_commands_per_s", "raw_appends_per_s", "ratio")
        assert row["target"] == (domain.TARGET if row["per_call"] == domain.BATCH else None)
        assert row["meets_target"] in ((None,) if row["target"] is None else (True, False))
    workload = result["workload"]
    assert workload["commands"] == sum(workload["kinds"].values())
    assert {
        "work.assigned",
        "work.declared",
        "work.approved",
        "assessment.supervisor_assessed",
    } <= workload["kinds"].keys()
    assert set(result["breakdown"]) == {"sqlite", "postgres"}
    for breakdown in result["breakdown"].values():
        assert breakdown["aggregate_reads"]["cache"] > 0
        assert set(breakdown["handlers"]) == set(workload["kinds"])
    assert json.loads((tmp_path / "domain.json").read_text())["benchmark"] == "domain"
