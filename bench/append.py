"""append: what sealing costs on the write path.

Table 1 (recorder): the library's plain application recorder vs the sealed recorder, built by
the library's factory from the same ``parse_database(url).env`` (only ``PERSISTENCE_MODULE``
differs), each on a fresh store (SQLite file / PostgreSQL schema in a fresh database),
inserting identical stored events whose state is a real signed envelope (~700 bytes), 1 and
100 events per transaction. Ratio = sealed / plain events per second; target >= 0.75 at 100
per transaction. Plain and sealed transactions alternate (two fresh stores side by side), so
that load from neighbours on this shared machine hits both alike; each repetition gives a ratio
and the figure is their median.

Table 2 (application): ``LedgerService.submit_many`` of pre-signed envelopes (100 per call:
parsing, replay and key checks, Ed25519 verification, handlers, sealed save) vs a plain
``eventsourcing`` ``Application`` saving 100 new aggregates per call whose created events carry
the same envelope bytes. No target; the costs of the steps, measured in the same run, explain
the difference.
"""

from __future__ import annotations

import base64
import cProfile
import pstats
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder, StoredEvent, Transcoding
from eventsourcing.utils import get_topic

from bench.common import (
    PLAIN_MODULES,
    SERVICE_STEPS,
    Step,
    attestations,
    backends,
    bootstrap,
    check_appended,
    median,
    open_store,
    pg_schema,
    profile_rows,
    profile_table,
    render_table,
    say,
    signers,
    sqlite_url,
    step_cumulative,
    steps_for,
    verdict,
    write_result,
)
from domain.attestations import Attestation
from ledger.config import parse_database
from ledger.sealer import SealedStoredEvent, Sealer
from ledger.store import SealedLog
from signing.facts import read_fact
from signing.keys import SigningKey
from signing.merkle import CompactRange

NAME = "append"
TARGET_100 = 0.75
TOPIC = get_topic(Attestation.Attested)
APP_BATCH = 100
APP_STEPS: list[Step] = [  # (file, function, depth in the call tree) for the profile table
    *SERVICE_STEPS,
    ("domain/service.py", "_handle_attestation", 1),
    ("domain/service.py", "_save", 1),
    ("eventsourcing/application.py", "save", 2),
    ("ledger/mapper.py", "to_stored_event", 3),
    ("ledger/sqlite.py", "insert_events", 3),
    ("ledger/postgres.py", "insert_events", 3),
    ("ledger/sealer.py", "seal", 4),
    ("domain/service.py", "_committed_seqs", 2),
]


@dataclass(frozen=True)
class Scale:
    reps: int  # repetitions of each recorder measurement (per variant)
    single: int  # events timed at 1 per transaction
    batched: int  # events timed at 100 per transaction
    app_events: int  # envelopes timed on the application path
    app_reps: int
    profiled: int  # envelopes then run under cProfile, untimed (0: none)


SCALES = {
    "full": Scale(reps=7, single=400, batched=10000, app_events=2000, app_reps=3, profiled=500),
    "quick": Scale(reps=3, single=60, batched=2000, app_events=300, app_reps=1, profiled=500),
    "tiny": Scale(reps=1, single=10, batched=200, app_events=200, app_reps=1, profiled=100),
}


@dataclass(frozen=True)
class Spec:
    """One event to insert, identical on the plain and the sealed side."""

    originator_id: UUID
    envelope: bytes
    nonce: str

    def plain(self) -> StoredEvent:
        return StoredEvent(self.originator_id, 1, TOPIC, self.envelope)

    def sealed(self) -> SealedStoredEvent:
        return SealedStoredEvent(self.originator_id, 1, TOPIC, self.envelope, nonce=self.nonce)


# -- fresh stores -------------------------------------------------------------------------------

StoreFactory = Callable[[], AbstractContextManager[str]]


def sqlite_stores(folder: Path) -> StoreFactory:
    counter = iter(range(10**9))

    @contextmanager
    def fresh() -> Iterator[str]:
        path = folder / f"store-{next(counter)}.db"
        try:
            yield sqlite_url(folder, path.name)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

    return fresh


def pg_stores(db_url: str) -> StoreFactory:
    def fresh() -> AbstractContextManager[str]:
        return pg_schema(db_url)

    return fresh


# -- table 1: recorders -------------------------------------------------------------------------


def interleaved_rates(
    plain_url: str, sealed_url: str, specs: Sequence[Spec], per_txn: int
) -> tuple[float, float]:
    """Events per second (plain, sealed) into two fresh stores, transactions alternating.

    After one warm-up transaction on each (prepared statements, first pages, frontier), the
    plain and the sealed recorder take turns, one transaction each, the first mover swapping
    every round: a burst of load from a neighbour on this shared machine hits both sides.
    """
    stores = {False: open_store(plain_url, sealed=False), True: open_store(sealed_url, sealed=True)}
    try:
        batches = {}
        for sealed in (False, True):
            events = [s.sealed() if sealed else s.plain() for s in specs]
            batches[sealed] = [events[i : i + per_txn] for i in range(0, len(events), per_txn)]
            stores[sealed].recorder.insert_events(batches[sealed].pop(0))
        seconds = {False: 0.0, True: 0.0}
        for k in range(len(batches[False])):
            for sealed in (False, True) if k % 2 == 0 else (True, False):
                recorder = stores[sealed].recorder
                batch = batches[sealed][k]
                start = time.perf_counter()
                recorder.insert_events(batch)
                seconds[sealed] += time.perf_counter() - start
    finally:
        for store in stores.values():
            store.close()
    count = len(specs) - per_txn
    return count / seconds[False], count / seconds[True]


def recorder_rows(
    backend: str, fresh: StoreFactory, specs: Sequence[Spec], scale: Scale
) -> list[dict[str, Any]]:
    rows = []
    for per_txn, count in ((1, scale.single), (100, scale.batched)):
        chosen = specs[: count + per_txn]
        plain_samples: list[float] = []
        sealed_samples: list[float] = []
        for _ in range(scale.reps):
            with fresh() as plain_url, fresh() as sealed_url:
                plain, sealed = interleaved_rates(plain_url, sealed_url, chosen, per_txn)
            plain_samples.append(plain)
            sealed_samples.append(sealed)
        ratios = [s / p for p, s in zip(plain_samples, sealed_samples, strict=True)]
        ratio = median(ratios)
        target = TARGET_100 if per_txn == 100 else None
        plain_rate, sealed_rate = median(plain_samples), median(sealed_samples)
        rows.append(
            {
                "backend": backend,
                "per_transaction": per_txn,
                "events_timed": count,
                "repetitions": scale.reps,
                "plain_events_per_s": plain_rate,
                "sealed_events_per_s": sealed_rate,
                "plain_us_per_event": 1e6 / plain_rate,
                "sealed_us_per_event": 1e6 / sealed_rate,
                "ratio": ratio,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratio_of_medians": sealed_rate / plain_rate,
                "target": target,
                "meets_target": None if target is None else ratio >= target,
                "plain_samples": plain_samples,
                "sealed_samples": sealed_samples,
            }
        )
    return rows


def sealer_cpu_us(specs: Sequence[Spec], per_txn: int = 100) -> float:
    """Microseconds per event spent in ``Sealer.seal`` alone (entry bytes, hashes, nodes)."""
    events = [s.sealed() for s in specs]
    sealer = Sealer()
    head = 0
    start = time.perf_counter()
    for i in range(0, len(events), per_txn):
        batch = events[i : i + per_txn]
        sealed = sealer.seal(head, lambda size: CompactRange(), batch, range(i, i + len(batch)))
        sealer.committed(sealed)
        head += len(batch)
    return (time.perf_counter() - start) / len(events) * 1e6


# -- table 2: application path ------------------------------------------------------------------


class BytesAsBase64(Transcoding):
    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return base64.b64encode(obj).decode("ascii")

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


class Document(Aggregate):
    """The plain baseline's aggregate: created by an event carrying an envelope's bytes."""

    def __init__(self, envelope: bytes) -> None:
        self.envelope = envelope


class PlainApp(Application[UUID]):
    name = "PlainBench"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(BytesAsBase64())


def plain_env(url: str) -> dict[str, str]:
    database = parse_database(url)
    env = dict(database.env)
    env["PERSISTENCE_MODULE"] = PLAIN_MODULES[database.backend]
    return env


def _batches(items: Sequence[bytes]) -> list[Sequence[bytes]]:
    return [items[i : i + APP_BATCH] for i in range(0, len(items), APP_BATCH)]


def app_plain_rate(url: str, envelopes: Sequence[bytes]) -> float:
    app = PlainApp(env=plain_env(url))
    try:
        warm, *batches = _batches(envelopes)
        app.save(*[Document(e) for e in warm])
        start = time.perf_counter()
        for batch in batches:
            app.save(*[Document(e) for e in batch])
        elapsed = time.perf_counter() - start
    finally:
        app.close()
    return (len(envelopes) - len(warm)) / elapsed


@dataclass
class SealedAppRun:
    rate: float
    replay_check_us: float
    profile: dict[str, Any]


def app_sealed_rate(
    url: str, work: Path, n_signers: int, count: int, *, profiled: int
) -> SealedAppRun:
    backend = parse_database(url).backend
    ledger = bootstrap(url, work, n_signers)
    try:
        envelopes = attestations(ledger.signers, count + APP_BATCH)
        warm, *batches = _batches(envelopes)
        check_appended(ledger.service.submit_many(warm))
        start = time.perf_counter()
        for batch in batches:
            check_appended(ledger.service.submit_many(batch))
        elapsed = time.perf_counter() - start
        lookup = replay_check_us(ledger.service.sealed)
        top: dict[str, Any] = {}
        if profiled:  # one more pass, not timed, to see where the time goes
            extra = attestations(ledger.signers, profiled)
            profiler = cProfile.Profile()
            profiler.enable()
            for batch in _batches(extra):
                check_appended(ledger.service.submit_many(batch))
            profiler.disable()
            stats = pstats.Stats(profiler)
            top = {
                "envelopes": profiled,
                "self": profile_rows(stats, 15),
                "cumulative": step_cumulative(stats, steps_for(backend, APP_STEPS)),
            }
    finally:
        ledger.close()
    return SealedAppRun(count / elapsed, lookup, top)


def replay_check_us(log: SealedLog, batches: int = 5) -> float:
    """The replay check ``submit_many`` makes (one query per batch), per envelope, in µs."""
    nonce_batches = [[uuid.uuid4().hex for _ in range(APP_BATCH)] for _ in range(batches)]
    start = time.perf_counter()
    for nonces in nonce_batches:
        log.nonce_seqs(nonces)
    return (time.perf_counter() - start) / (batches * APP_BATCH) * 1e6


def step_costs_us(envelopes: Sequence[bytes], keys: Sequence[SigningKey]) -> dict[str, float]:
    """Per-envelope CPU cost of the intake steps, on this machine, now (µs)."""
    verifiers = {k.keyid: k.verifier() for k in keys}
    start = time.perf_counter()
    facts = [read_fact(raw, strict=True) for raw in envelopes]
    parse = (time.perf_counter() - start) / len(envelopes) * 1e6
    start = time.perf_counter()
    for fact in facts:
        fact.verify_signature(verifiers[fact.keyid])
    verify = (time.perf_counter() - start) / len(facts) * 1e6
    start = time.perf_counter()
    for fact in facts:
        Attestation.check(fact)  # what the service's handler does, then the new aggregate
        Attestation._start(Attestation.Attested, Attestation.id_for(fact), fact)
    handle = (time.perf_counter() - start) / len(facts) * 1e6
    return {
        "parse_envelope_and_payload": parse,
        "ed25519_verify": verify,
        "attestation_handler": handle,
    }


def application_rows(
    backend: str, fresh: StoreFactory, work: Path, scale: Scale
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    keys = signers(4)
    plain_envelopes = attestations(keys, scale.app_events + APP_BATCH)
    plain_samples: list[float] = []
    sealed_runs: list[SealedAppRun] = []
    for rep in range(scale.app_reps):
        for sealed in (False, True) if rep % 2 == 0 else (True, False):
            with fresh() as url:
                if sealed:
                    home = work / f"home-{backend}-{rep}"
                    sealed_runs.append(
                        app_sealed_rate(
                            url,
                            home,
                            4,
                            scale.app_events,
                            profiled=scale.profiled if rep == 0 else 0,
                        )
                    )
                else:
                    plain_samples.append(app_plain_rate(url, plain_envelopes))
    plain = median(plain_samples)
    sealed_rate = median([r.rate for r in sealed_runs])
    row = {
        "backend": backend,
        "batch": APP_BATCH,
        "events_timed": scale.app_events,
        "repetitions": scale.app_reps,
        "plain_events_per_s": plain,
        "sealed_events_per_s": sealed_rate,
        "plain_us_per_event": 1e6 / plain,
        "sealed_us_per_event": 1e6 / sealed_rate,
        "ratio": sealed_rate / plain,
        "replay_check_us": median([r.replay_check_us for r in sealed_runs]),
    }
    extra = {"profile": sealed_runs[0].profile} if sealed_runs[0].profile else {}
    return [row], extra


# -- entry point --------------------------------------------------------------------------------


def run(
    mode: str = "full",
    pg_url: str | None = None,
    *,
    pg_is_database: bool = False,
    results_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; ``pg_url`` is a server (a fresh database is made) or, with
    ``pg_is_database``, a database to use as is (fresh schemas are made in it)."""
    scale = SCALES[mode]
    keys = signers(4)
    count = max(scale.single + 1, scale.batched + 100)
    envelopes = attestations(keys, count)
    specs = [Spec(uuid.uuid4(), e, read_fact(e).nonce) for e in envelopes]
    sizes = [len(e) for e in envelopes]
    recorder: list[dict[str, Any]] = []
    application: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kpi-bench-") as tmp:
        work = Path(tmp)
        for backend, database in backends(pg_url, pg_is_database):
            with database as db_url:
                fresh = sqlite_stores(work) if db_url is None else pg_stores(db_url)
                say(f"append: {backend} recorders ...")
                recorder += recorder_rows(backend, fresh, specs, scale)
                say(f"append: {backend} application path ...")
                rows, extra = application_rows(backend, fresh, work, scale)
                application += rows
                if extra:
                    profiles[backend] = extra["profile"]
    costs = step_costs_us(envelopes[: min(len(envelopes), 1000)], keys)
    costs["sealer_python"] = sealer_cpu_us(specs[: min(len(specs), 2000)])
    result = {
        "mode": mode,
        "envelope_bytes": {"min": min(sizes), "max": max(sizes), "mean": sum(sizes) / len(sizes)},
        "recorder": recorder,
        "application": application,
        "step_costs_us": costs,
        "application_profile": profiles,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    rows = []
    for r in result["recorder"]:
        target = r["target"]
        rows.append(
            [
                r["backend"],
                r["per_transaction"],
                r["plain_events_per_s"],
                r["sealed_events_per_s"],
                r["ratio"],
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                "-" if target is None else f">= {target}",
                "-" if target is None else verdict(r["ratio"], target),
            ]
        )
    say()
    say(
        render_table(
            "append / recorder: sealed vs plain library recorder (events/s and ratio: medians"
            " over repetitions)",
            ["backend", "per txn", "plain ev/s", "sealed ev/s", "ratio", "range", "target", ""],
            rows,
        )
    )
    say()
    say(
        render_table(
            "append / application: LedgerService.submit_many vs plain Application.save "
            f"({APP_BATCH} per call)",
            [
                "backend",
                "plain ev/s",
                "ledger ev/s",
                "ratio",
                "µs/ev plain",
                "µs/ev ledger",
                "replay check µs/ev",
            ],
            [
                [
                    r["backend"],
                    r["plain_events_per_s"],
                    r["sealed_events_per_s"],
                    r["ratio"],
                    r["plain_us_per_event"],
                    r["sealed_us_per_event"],
                    r["replay_check_us"],
                ]
                for r in result["application"]
            ],
        )
    )
    say()
    say(
        render_table(
            "append / per-event CPU cost of the intake steps (µs, this run)",
            ["step", "µs/event"],
            [[k, v] for k, v in result["step_costs_us"].items()],
        )
    )
    for backend, profile in result["application_profile"].items():
        say()
        say(
            profile_table(
                f"append / where submit_many's time goes on {backend} (cProfile,"
                f" {profile['envelopes']} envelopes)",
                APP_STEPS,
                profile["cumulative"],
            )
        )
