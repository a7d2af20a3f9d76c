"""verify: offline verification throughput of an export bundle vs bare Ed25519 verification.

A ledger is built through ``LedgerService`` on SQLite (admin, several signers, document
attestations, signed checkpoints), exported with ``export_bundle``, and verified with
``signing.verify.verify(ExportSource(dir), log_keys)``. The baseline verifies the very same
signatures over the very same messages (each envelope's DSSE PAE bytes) with ``cryptography``'s
``Ed25519PublicKey.verify`` and nothing else: in-process for one core, and split over a
``multiprocessing`` pool (fork, the verifier's own start method) for all cores, the pool's
start-up counted as it is in ``verify``. Ratio = verify entries/s / bare signatures/s; target
>= 0.8 on all cores.
"""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import pstats
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
    "full": Scale(entries=20_000, signers=8, reps=3),
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


def bare_single(jobs: list[Job]) -> float:
    """Seconds to verify every job in this process."""
    global _JOBS
    _JOBS = jobs
    start = time.perf_counter()
    _verify_range((0, len(jobs)))
    return time.perf_counter() - start


def bare_parallel(jobs: list[Job], workers: int) -> float:
    """Seconds to verify every job on a fork pool of ``workers`` (start-up included)."""
    global _JOBS
    _JOBS = jobs  # inherited by the forked workers: no transfer cost in the baseline
    parts = workers * 4
    step = -(-len(jobs) // parts)
    ranges = [(i, min(i + step, len(jobs))) for i in range(0, len(jobs), step)]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        done = sum(pool.map(_verify_range, ranges, chunksize=1))
    elapsed = time.perf_counter() - start
    assert done == len(jobs)
    return elapsed


# -- the verifier -------------------------------------------------------------------------------


@dataclass
class VerifyRun:
    seconds: float
    main_cpu_seconds: float
    report: Report


def run_verify(bundle: Path, log_keys: list[VerifierKey], workers: int) -> VerifyRun:
    with ExportSource(bundle) as source:
        cpu = time.process_time()
        start = time.perf_counter()
        report = verify(source, log_keys, workers=workers)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return VerifyRun(elapsed, cpu, report)


def profile_single(bundle: Path, log_keys: list[VerifierKey]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    with ExportSource(bundle) as source:
        profiler.enable()
        verify(source, log_keys, workers=1)
        profiler.disable()
    stats = pstats.Stats(profiler)
    return {"self": profile_rows(stats, 15), "cumulative": cumulative(stats, VERIFY_STEPS)}


# -- entry point --------------------------------------------------------------------------------


def run(mode: str = "full", *, workers: int | None = None, results_dir: Path | None = None
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
        samples: dict[str, list[float]] = {"verify_all": [], "bare_all": [],
                                           "verify_one": [], "bare_one": []}
        main_cpu: list[float] = []
        reports: list[Report] = []
        for _ in range(scale.reps):
            all_cores = run_verify(bundle, log_keys, cores)
            samples["verify_all"].append(n / all_cores.seconds)
            main_cpu.append(all_cores.main_cpu_seconds / all_cores.seconds)
            samples["bare_all"].append(n / bare_parallel(jobs, cores))
            one = run_verify(bundle, log_keys, 1)
            samples["verify_one"].append(n / one.seconds)
            samples["bare_one"].append(n / bare_single(jobs))
            reports += [all_cores.report, one.report]
        profile = profile_single(bundle, log_keys) if mode != "tiny" else {}
    rates = {k: median(v) for k, v in samples.items()}
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
            "ratio": rates["verify_all"] / rates["bare_all"],
            "target": TARGET,
            "meets_target": rates["verify_all"] / rates["bare_all"] >= TARGET,
            "main_process_cpu_share": median(main_cpu),
        },
        "one_core": {
            "verify_entries_per_s": rates["verify_one"],
            "bare_signatures_per_s": rates["bare_one"],
            "ratio": rates["verify_one"] / rates["bare_one"],
            "verify_us_per_entry": 1e6 / rates["verify_one"],
            "bare_us_per_signature": 1e6 / rates["bare_one"],
        },
        "samples": samples,
        "single_worker_profile": profile,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    a, o = result["all_cores"], result["one_core"]
    say()
    say(render_table(
        f"verify: {result['entries']:,} entries, {result['signers']} signing keys, "
        f"report ok = {result['report_ok']}",
        ["cores", "verify entries/s", "bare Ed25519 sig/s", "ratio", "target", ""],
        [[f"all ({result['workers']})", a["verify_entries_per_s"], a["bare_signatures_per_s"],
          a["ratio"], f">= {a['target']}", verdict(a["ratio"], a["target"])],
         ["1", o["verify_entries_per_s"], o["bare_signatures_per_s"], o["ratio"], "-", "-"]]))
    say(f"  one core: verify {o['verify_us_per_entry']:.0f} µs/entry, "
        f"bare Ed25519 {o['bare_us_per_signature']:.0f} µs/signature; "
        f"all cores: main process busy {a['main_process_cpu_share']:.0%} of the wall time")
