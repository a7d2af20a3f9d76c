"""verify: offline verification throughput of an export bundle vs bare Ed25519 verification.

A ledger is built through ``LedgerService`` on SQLite (admin, several signers, document
attestations, signed checkpoints), exported with ``export_bundle``, and verified with
``signing.verify.verify(ExportSource(dir), log_keys)``. The baseline verifies the very same
signatures over the very same messages (each envelope's DSSE PAE bytes) with ``cryptography``'s
``Ed25519PublicKey.verify`` and nothing else: in-process for one core, and split over a
``multiprocessing`` pool (fork, the verifier's own start method) for all cores, the pool's
start-up counted as it is in ``verify``. The four measurements take turns in each repetition;
ratio = verify entries/s / bare signatures/s, median over repetitions; target >= 0.8 on all
cores.
"""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import pstats
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bench.common import (
    attestations,
    bootstrap,
    check_appended,
    cumulative,
    median,
    profile_rows,
    render_table,
    say,
    sqlite_url,
    verdict,
    write_result,
)
from ledger.export import export_bundle
from signing.bundle import ExportSource
from signing.entry import decode_entry
from signing.facts import read_fact
from signing.keys import VerifierKey
from signing.verify import Report, verify

NAME = "verify"
TARGET = 0.8
BUILD_BATCH = 100
VERIFY_STEPS = [
    ("signing/verify.py", "verify"),
    ("signing/bundle.py", "entries"),
    ("signing/verify.py", "check_chunk"),
    ("signing/verify.py", "_open"),
    ("signing/entry.py", "decode_entry"),
    ("signing/facts.py", "read_fact"),
    ("signing/dsse.py", "to_bytes"),
    ("signing/facts.py", "check_payload"),
    ("signing/keys.py", "verify"),
    ("signing/merkle.py", "leaf_hash"),
    ("signing/verify.py", "feed"),
    ("signing/keyring.py", "signer"),
]


@dataclass(frozen=True)
class Scale:
    entries: int
    signers: int
    reps: int


SCALES = {
    "full": Scale(entries=20_000, signers=8, reps=5),
    "quick": Scale(entries=2_000, signers=4, reps=1),
    "tiny": Scale(entries=300, signers=3, reps=1),
}

Job = tuple[bytes, bytes, bytes]  # public key, signature, message (PAE)


# -- building the bundle ------------------------------------------------------------------------


def build_bundle(work: Path, entries: int, signer_count: int) -> tuple[Path, list[VerifierKey]]:
    """A ledger of ``entries`` entries with checkpoints, exported to ``work/bundle``."""
    ledger = bootstrap(sqlite_url(work, "verify.db"), work / "home", signer_count)
    try:
        log = ledger.service.sealed
        next_checkpoint = entries // 2
        while log.log_size() < entries:
            count = min(BUILD_BATCH, entries - log.log_size())
            check_appended(ledger.service.submit_many(attestations(ledger.signers, count)))
            if next_checkpoint and log.log_size() >= next_checkpoint:
                ledger.checkpointer.checkpoint()
                next_checkpoint = 0
        ledger.checkpointer.checkpoint()
        bundle = work / "bundle"
        export_bundle(log, bundle)
        return bundle, ledger.log_keys()
    finally:
        ledger.close()


def signature_jobs(bundle: Path) -> list[Job]:
    """Every entry's (public key, signature, PAE) as the verifier will check it."""
    keys: dict[str, bytes] = {}
    jobs: list[Job] = []
    with ExportSource(bundle) as source:
        for item in source.entries():  # (seq, entry bytes, stored leaf hash)
            data = item[1]
            assert data is not None
            fact = read_fact(decode_entry(data).envelope, strict=False)
            public = fact.data.get("public_key")
            if fact.type == "key.registered" and isinstance(public, str):
                key = VerifierKey.parse(public)
                keys[key.keyid] = key.public_raw
            jobs.append((keys[fact.keyid], fact.signature.sig, fact.envelope.pae()))
    return jobs


# -- the baseline -------------------------------------------------------------------------------

_JOBS: list[Job] = []


def _verify_range(bounds: tuple[int, int]) -> int:
    cache: dict[bytes, Ed25519PublicKey] = {}
    for public, sig, message in _JOBS[bounds[0] : bounds[1]]:
        key = cache.get(public)
        if key is None:
            key = cache[public] = Ed25519PublicKey.from_public_bytes(public)
        key.verify(sig, message)  # raises InvalidSignature
    return bounds[1] - bounds[0]


@dataclass
class Timing:
    """Wall seconds, and CPU seconds of this process and of its (reaped) child processes."""

    wall: float
    main_cpu: float
    children_cpu: float


class _Clock:
    def __enter__(self) -> _Clock:
        self.children = _children_cpu()
        self.main = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(
            time.perf_counter() - self.start,
            time.process_time() - self.main,
            _children_cpu() - self.children,
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bare_single(jobs: list[Job]) -> Timing:
    """Verify every job in this process."""
    global _JOBS
    _JOBS = jobs
    with _Clock() as clock:
        _verify_range((0, len(jobs)))
    return clock.timing


def bare_parallel(jobs: list[Job], workers: int) -> Timing:
    """Verify every job on a fork pool of ``workers`` (start-up included)."""
    global _JOBS
    _JOBS = jobs  # inherited by the forked workers: no transfer cost in the baseline
    parts = workers * 4
    step = -(-len(jobs) // parts)
    ranges = [(i, min(i + step, len(jobs))) for i in range(0, len(jobs), step)]
    with _Clock() as clock, multiprocessing.get_context("fork").Pool(workers) as pool:
        done = sum(pool.map(_verify_range, ranges, chunksize=1))
    assert done == len(jobs)
    return clock.timing


# -- the verifier -------------------------------------------------------------------------------


def run_verify(bundle: Path, log_keys: list[VerifierKey], workers: int) -> tuple[Timing, Report]:
    with ExportSource(bundle) as source, _Clock() as clock:
        report = verify(source, log_keys, workers=workers)
    return clock.timing, report


def profile_single(bundle: Path, log_keys: list[VerifierKey]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    with ExportSource(bundle) as source:
        profiler.enable()
        verify(source, log_keys, workers=1)
        profiler.disable()
    stats = pstats.Stats(profiler)
    return {"self": profile_rows(stats, 15), "cumulative": cumulative(stats, VERIFY_STEPS)}


# -- entry point --------------------------------------------------------------------------------


def run(
    mode: str = "full", *, workers: int | None = None, results_dir: Path | None = None
) -> dict[str, Any]:
    scale = SCALES[mode]
    cores = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="kpi-bench-verify-") as tmp:
        work = Path(tmp)
        say(f"verify: building a ledger of {scale.entries:,} entries ...")
        start = time.perf_counter()
        bundle, log_keys = build_bundle(work, scale.entries, scale.signers)
        build_seconds = time.perf_counter() - start
        jobs = signature_jobs(bundle)
        n = len(jobs)
        say(f"verify: {n:,} entries built in {build_seconds:.1f}s; timing ...")
        kinds = ("verify_all", "bare_all", "verify_one", "bare_one")
        timings: dict[str, list[Timing]] = {k: [] for k in kinds}
        reports: list[Report] = []
        for _ in range(scale.reps):
            timing, report_all = run_verify(bundle, log_keys, cores)
            timings["verify_all"].append(timing)
            timings["bare_all"].append(bare_parallel(jobs, cores))
            timing, report_one = run_verify(bundle, log_keys, 1)
            timings["verify_one"].append(timing)
            timings["bare_one"].append(bare_single(jobs))
            reports += [report_all, report_one]
        profile = profile_single(bundle, log_keys) if mode != "tiny" else {}
    samples = {k: [n / t.wall for t in v] for k, v in timings.items()}
    cpu_us = {
        k: {
            "main": median([t.main_cpu / n * 1e6 for t in v]),
            "workers": median([t.children_cpu / n * 1e6 for t in v]),
            "total": median([(t.main_cpu + t.children_cpu) / n * 1e6 for t in v]),
        }
        for k, v in timings.items()
    }
    rates = {k: median(v) for k, v in samples.items()}
    ratio_all = median(
        [v / b for v, b in zip(samples["verify_all"], samples["bare_all"], strict=True)]
    )
    ratio_one = median(
        [v / b for v, b in zip(samples["verify_one"], samples["bare_one"], strict=True)]
    )
    ok = all(r.ok and r.signatures_checked == n and r.size == n for r in reports)
    result: dict[str, Any] = {
        "mode": mode,
        "entries": n,
        "signers": scale.signers + 1,
        "workers": cores,
        "repetitions": scale.reps,
        "build_seconds": build_seconds,
        "report_ok": ok,
        "problems": [p.line() for r in reports for p in r.problems][:10],
        "checkpoints": len(reports[0].checkpoints),
        "all_cores": {
            "verify_entries_per_s": rates["verify_all"],
            "bare_signatures_per_s": rates["bare_all"],
            "ratio": ratio_all,
            "target": TARGET,
            "meets_target": ratio_all >= TARGET,
        },
        "one_core": {
            "verify_entries_per_s": rates["verify_one"],
            "bare_signatures_per_s": rates["bare_one"],
            "ratio": ratio_one,
            "verify_us_per_entry": 1e6 / rates["verify_one"],
            "bare_us_per_signature": 1e6 / rates["bare_one"],
        },
        "samples": samples,
        "cpu_us_per_entry": cpu_us,
        "single_worker_profile": profile,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    a, o = result["all_cores"], result["one_core"]
    say()
    say(
        render_table(
            f"verify: {result['entries']:,} entries, {result['signers']} signing keys, "
            f"report ok = {result['report_ok']}",
            ["cores", "verify entries/s", "bare Ed25519 sig/s", "ratio", "target", ""],
            [
                [
                    f"all ({result['workers']})",
                    a["verify_entries_per_s"],
                    a["bare_signatures_per_s"],
                    a["ratio"],
                    f">= {a['target']}",
                    verdict(a["ratio"], a["target"]),
                ],
                ["1", o["verify_entries_per_s"], o["bare_signatures_per_s"], o["ratio"], "-", "-"],
            ],
        )
    )
    cpu = result["cpu_us_per_entry"]
    say()
    say(
        render_table(
            "verify: CPU µs per entry, all processes (median); on all cores the ratio can be at"
            " most bare total / verify total",
            ["run", "main process", "workers", "total"],
            [[k, v["main"], v["workers"], v["total"]] for k, v in cpu.items()],
        )
    )
