"""domain: commands per second through the application service vs raw appends to the ledger core.

Workload: a month (March 2026) of an organisation of N employees, signed with a fake clock.
The organisation facts come first and are not timed: the administrator's self-registration,
every person's key, the units (a province, agencies, sections), the roles (HR officers and an
integrating system per agency, a supervisor per section, an inspector), the positions, the
default policy, each agency's catalogue and the employees. Then the timed command stream, in
the order the facts would arrive (sorted by their signed time: many employees, many items in
flight): ``work.assigned`` (by supervisors, a fifth by the agency's system with an idempotency
key), ``work.declared`` (by the employee, or by the system for some of its own items),
``work.approved`` / ``work.rejected`` (rejected items are declared again and approved),
``work.delayed``, ``work.quality_failed``, then ``assessment.supervisor_assessed`` for every
employee and a few ``score.adjustment_proposed`` / ``score.adjustment_approved``. All envelopes
are signed before any timing.

Domain: ``LedgerService.submit_many`` with the domain's handlers (schema validation, rules,
aggregates read from the cache or the repository). Raw: the SAME envelopes, byte for byte, on
a fresh store through a ``LedgerService`` whose every non-key fact type is re-registered with
a pass-through handler that starts a new ``RawFact`` stream per fact (as the attestation
handler does): it still parses, checks replay, key and signature, the time window, and seals,
but applies no domain rule and reads no aggregate. Both stores get the organisation facts
first, so their key rings are the same.

Each repetition opens a fresh store for each side and alternates the calls between them (the
first mover swapping each round), 100 commands per call, and separately 1 per call on a prefix
of the stream; ratio = domain commands/s / raw appends/s per repetition, median over the
repetitions; target >= 0.5 at 100 per call. An extra untimed domain pass counts where the
aggregates came from (this batch, the cache, the repository) and times each handler, and one
more runs under cProfile.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import pstats
import random
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

from bench.append import StoreFactory, pg_stores, sqlite_stores
from bench.common import (
    SERVICE_STEPS,
    Step,
    backends,
    check_appended,
    median,
    profile_rows,
    profile_table,
    render_table,
    sample_catalogue,
    say,
    step_cumulative,
    steps_for,
    verdict,
    write_result,
)
from domain.context import Context, Recording
from domain.keys import Principal
from domain.policy import shipped_policy
from domain.service import LedgerService, TimeWindow
from domain.signed import SignedAggregate, SignedCreated, stream_id
from ledger.config import parse_database
from signing.facts import sign_fact
from signing.keyring import key_registration
from signing.keys import SigningKey

NAME = "domain"
TARGET = 0.5
BATCH = 100
UTC = dt.UTC
PERIOD = "2026-03"
ORG_TIME = dt.datetime(2025, 12, 15, 2, 0, tzinfo=UTC)  # the organisation is set up in December
CLOCK = dt.datetime(2026, 4, 6, 1, 0, tzinfo=UTC)  # the ledger's clock: after every command
CRITERIA = ("political", "ethics", "discipline", "competence", "innovation")
CODES = ("OSS-01", "OSS-02", "PRO-03")  # the catalogue items an officer may be given
PROFILE_STEPS: list[Step] = [  # (file, function, depth in the call tree) for the profile table
    *SERVICE_STEPS,
    ("domain/service.py", "handle", 1),
    ("domain/schemas.py", "validate", 2),
    ("domain/work.py", "assign", 2),
    ("domain/work.py", "declare", 2),
    ("domain/work.py", "_verdict", 2),
    ("domain/work.py", "delay", 2),
    ("domain/work.py", "fail_quality", 2),
    ("domain/assessment.py", "supervisor_assess", 2),
    ("domain/assessment.py", "propose_adjustment", 2),
    ("domain/assessment.py", "approve_adjustment", 2),
    ("domain/work.py", "_item", 3),
    ("domain/context.py", "require_role", 3),
    ("domain/context.py", "has_role", 3),
    ("domain/context.py", "agency_of", 3),
    ("domain/context.py", "ancestors", 3),
    ("domain/context.py", "policy", 3),
    ("domain/periods.py", "check_open", 3),
    ("domain/context.py", "get", 3),
    ("domain/service.py", "get_or_none", 4),
    ("eventsourcing/application.py", "get", 5),
    ("domain/service.py", "_apply", 1),
    ("domain/service.py", "_save", 1),
    ("ledger/sqlite.py", "insert_events", 2),
    ("ledger/postgres.py", "insert_events", 2),
]


@dataclass(frozen=True)
class Scale:
    agencies: int
    sections: int  # per agency
    employees: int  # in all, spread over the sections
    items: int  # work items per employee in the month
    single: int  # commands timed at 1 per call (a prefix of the stream)
    reps: int
    profiled: int  # commands run under cProfile (the first so many of the stream; 0: none)


SCALES = {
    "full": Scale(
        agencies=2, sections=4, employees=200, items=10, single=300, reps=3, profiled=10_000
    ),
    "quick": Scale(agencies=1, sections=2, employees=16, items=4, single=30, reps=1, profiled=0),
    # for the tests: every kind of command in the stream (59), all of them profiled
    "tiny": Scale(agencies=1, sections=2, employees=4, items=4, single=5, reps=1, profiled=100),
}


# -- the workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    """Pre-signed envelopes: the organisation (untimed), then the month's commands."""

    organisation: list[bytes]
    commands: list[bytes]
    kinds: Counter[str]
    employees: int
    units: int


@dataclass(order=True)
class _Command:
    time: dt.datetime
    order: int
    actor: str = field(compare=False)
    type: str = field(compare=False)
    data: dict[str, Any] = field(compare=False)
    idempotency_key: str | None = field(compare=False, default=None)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


EXTRA_ITEMS = ({"code": "PRO-03", "name": "Báo cáo chuyên đề", "group": "C", "products": "2"},)


def build_workload(scale: Scale, seed: int = 20260301) -> Workload:
    """The organisation and the month's command stream, every envelope signed."""
    rng = random.Random(seed)
    keys: dict[str, SigningKey] = {}

    def key(name: str) -> SigningKey:
        if name not in keys:
            keys[name] = SigningKey.generate(name)
        return keys[name]

    def sign(who: str, fact_type: str, data: dict[str, Any], at: dt.datetime, **kw: Any) -> bytes:
        return sign_fact(key(who), fact_type, data, time=at, **kw).to_bytes()

    admin = key("admin")
    org: list[bytes] = [
        key_registration(admin, admin.verifier(), admin=True, time=ORG_TIME).to_bytes()
    ]
    agencies = [f"KH-A{a + 1}" for a in range(scale.agencies)]
    sections = {a: [f"{a}-S{s + 1}" for s in range(scale.sections)] for a in agencies}
    hr = {a: (f"hr1.{a.lower()}", f"hr2.{a.lower()}") for a in agencies}
    system = {a: f"system.{a.lower()}" for a in agencies}
    supervisor = {s: f"sup.{s.lower()}" for a in agencies for s in sections[a]}
    inspector = "inspector.kh"
    all_sections = [s for a in agencies for s in sections[a]]
    staff = [f"emp.{i:04d}" for i in range(scale.employees)]
    home = {e: all_sections[i % len(all_sections)] for i, e in enumerate(staff)}
    agency_of = {s: a for a in agencies for s in sections[a]}
    people = [
        *[h for a in agencies for h in hr[a]],
        *system.values(),
        *supervisor.values(),
        inspector,
        *staff,
    ]
    t = ORG_TIME
    for name in people:
        org.append(key_registration(admin, key(name).verifier(), time=t).to_bytes())
    org.append(
        sign(
            "admin",
            "org.unit_created",
            {"unit": "KH", "name": "Tỉnh Khánh Hòa", "kind": "province"},
            t,
        )
    )
    for n, a in enumerate(agencies):
        org.append(
            sign(
                "admin",
                "org.unit_created",
                {"unit": a, "name": f"UBND phường {n + 1}", "kind": "agency", "parent": "KH"},
                t,
            )
        )
        for m, s in enumerate(sections[a]):
            org.append(
                sign(
                    "admin",
                    "org.unit_created",
                    {"unit": s, "name": f"Phòng {m + 1}", "kind": "section", "parent": a},
                    t,
                )
            )
        for h in hr[a]:
            org.append(sign("admin", "role.granted", {"principal": h, "role": "hr", "unit": a}, t))
    org.append(
        sign(
            "admin", "role.granted", {"principal": inspector, "role": "inspector", "unit": "KH"}, t
        )
    )
    for a in agencies:
        grantor = hr[a][0]
        org.append(
            sign(
                grantor,
                "role.granted",
                {"principal": system[a], "role": "integrator", "unit": a},
                t,
            )
        )
        for s in sections[a]:
            org.append(
                sign(
                    grantor,
                    "role.granted",
                    {"principal": supervisor[s], "role": "supervisor", "unit": s},
                    t,
                )
            )
    for code, name, leader in (("officer", "Công chức", False), ("head", "Trưởng phòng", True)):
        org.append(
            sign(
                "admin",
                "org.position_defined",
                {"position": code, "name": name, "leader": leader},
                t,
            )
        )
    org.append(
        sign("admin", "policy.published", {"scope": "KH", "document": shipped_policy("default")}, t)
    )
    for a in agencies:
        org.append(sign(hr[a][0], "catalogue.published", sample_catalogue(a, EXTRA_ITEMS), t))
    for e in staff:
        unit = home[e]
        org.append(
            sign(
                hr[agency_of[unit]][1],
                "employee.registered",
                {
                    "employee": e,
                    "name": f"Nhân viên {e[4:]}",
                    "unit": unit,
                    "position": "officer",
                    "since": "2026-01-01",
                },
                t,
            )
        )

    # -- the month -------------------------------------------------------------------------
    commands: list[_Command] = []
    workdays = [dt.date(2026, 3, d) for d in range(2, 32) if dt.date(2026, 3, d).weekday() < 5]

    def add(at: dt.datetime, actor: str, fact_type: str, data: dict[str, Any], **kw: Any) -> None:
        commands.append(_Command(at, len(commands), actor, fact_type, data, **kw))

    def office_time(day: dt.date) -> dt.datetime:  # 08:00-16:00 in Vietnam
        start = dt.datetime(day.year, day.month, day.day, 1, 0, tzinfo=UTC)
        return start + dt.timedelta(seconds=rng.randrange(8 * 3600))

    def later(at: dt.datetime, low_h: float, high_h: float) -> dt.datetime:
        return at + dt.timedelta(seconds=rng.randrange(int(low_h * 3600), int(high_h * 3600)))

    for e in staff:
        unit = home[e]
        agency = agency_of[unit]
        sup = supervisor[unit]
        for i in range(scale.items):
            item = f"{PERIOD}/{e}/{i:02d}"
            assigned = office_time(rng.choice(workdays[:15]))
            due = min(
                assigned.date() + dt.timedelta(days=rng.randrange(3, 11)), dt.date(2026, 3, 31)
            )
            by_system = rng.random() < 0.2
            data: dict[str, Any] = {
                "item": item,
                "employee": e,
                "code": rng.choice(CODES),
                "period": PERIOD,
                "due": due.isoformat(),
            }
            if rng.random() < 0.2:
                data["quantity"] = str(rng.randrange(2, 6))
            if by_system:
                add(
                    assigned,
                    system[agency],
                    "work.assigned",
                    data,
                    idempotency_key=f"dossier-{item}",
                )
            else:
                add(assigned, sup, "work.assigned", data)
            declarer = system[agency] if by_system and rng.random() < 0.5 else e
            declared = later(assigned, 2, 96)
            if rng.random() < 0.1:  # a delay recorded while the item is in flight
                add(
                    assigned + (declared - assigned) / 2,
                    sup,
                    "work.delayed",
                    {"item": item, "days": rng.randrange(1, 4), "reason": "Hồ sơ bổ sung chậm"},
                )
            for attempt in range(2):
                done_at = declared - dt.timedelta(seconds=rng.randrange(60, 3600))
                declaration: dict[str, Any] = {
                    "item": item,
                    "done_at": _stamp(max(done_at, assigned)),
                    "evidence": [f"{rng.getrandbits(256):064x}"],
                }
                if rng.random() < 0.3:
                    declaration["hours"] = str(rng.randrange(1, 9))
                add(declared, declarer, "work.declared", declaration)
                verdict_at = later(declared, 1, 48)
                if attempt == 0 and rng.random() < 0.1:
                    add(
                        verdict_at,
                        sup,
                        "work.rejected",
                        {"item": item, "reason": "Thiếu minh chứng"},
                    )
                    declared = later(verdict_at, 1, 24)
                    continue
                add(verdict_at, sup, "work.approved", {"item": item})
                if rng.random() < 0.05:
                    add(
                        later(verdict_at, 1, 72),
                        rng.choice((sup, inspector)),
                        "work.quality_failed",
                        {
                            "item": item,
                            "severity": rng.choice(("minor", "major")),
                            "reason": "Sai biểu mẫu",
                        },
                    )
                break
        scores = {c: str(Decimal(rng.randrange(8, 12)) / 2) for c in CRITERIA}  # 4 .. 5.5
        assessed = office_time(rng.choice(workdays[-4:]))
        add(
            assessed,
            sup,
            "assessment.supervisor_assessed",
            {"employee": e, "period": PERIOD, "scores": scores},
        )
    adjusted = rng.sample(staff, max(1, len(staff) // 20))
    for n, e in enumerate(adjusted):
        agency = agency_of[home[e]]
        first, second = hr[agency]
        proposed = dt.datetime(2026, 3, 31, 9, 5, tzinfo=UTC) + dt.timedelta(seconds=10 * n)
        adjustment = f"adj-{PERIOD}-{n:03d}"
        add(
            proposed,
            first,
            "score.adjustment_proposed",
            {
                "adjustment": adjustment,
                "employee": e,
                "period": PERIOD,
                "criterion": rng.choice(("general", "discipline")),
                "delta": rng.choice(("0.5", "-1")),
                "reason": "Khen thưởng đột xuất",
                "legal_basis": "Quyết định 12/QĐ-UBND",
            },
        )
        add(
            later(proposed, 1, 6),
            second,
            "score.adjustment_approved",
            {"adjustment": adjustment, "employee": e, "period": PERIOD},
        )
    commands.sort()
    assert commands[-1].time <= CLOCK, "the stream runs past the ledger's clock"
    signed = [
        sign(c.actor, c.type, c.data, c.time, idempotency_key=c.idempotency_key) for c in commands
    ]
    return Workload(
        organisation=org,
        commands=signed,
        kinds=Counter(c.type for c in commands),
        employees=len(staff),
        units=1 + len(agencies) + len(all_sections),
    )


# -- the two services ---------------------------------------------------------------------------


class RawFact(SignedAggregate):
    """The raw baseline's aggregate: one new stream per fact, no state read."""

    class Recorded(SignedCreated):
        def apply(self, aggregate: RawFact) -> None:
            pass

    FACT_TYPES: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def id_for(nonce: str) -> UUID:
        return stream_id("raw", nonce)


def _pass_through(ctx: Context) -> Recording:
    return ctx.start(RawFact, RawFact.id_for(ctx.fact.nonce), RawFact.Recorded)


def open_service(url: str, *, raw: bool) -> LedgerService:
    """The ledger's service with a fake clock; ``raw``: no domain rule for non-key facts."""
    service = LedgerService(parse_database(url), clock=lambda: CLOCK, window=TimeWindow(past=None))
    if raw:
        service.register_handler(
            [t for t in service.handlers if t not in Principal.FACT_TYPES], _pass_through
        )
    return service


def _calls(envelopes: Sequence[bytes], per_call: int) -> list[Sequence[bytes]]:
    return [envelopes[i : i + per_call] for i in range(0, len(envelopes), per_call)]


def organise(service: LedgerService, workload: Workload) -> None:
    for call in _calls(workload.organisation, BATCH):
        check_appended(service.submit_many(call))


@dataclass
class Pair:
    domain_rate: float
    raw_rate: float

    @property
    def ratio(self) -> float:
        return self.domain_rate / self.raw_rate


def interleaved(
    fresh: StoreFactory, workload: Workload, commands: Sequence[bytes], per_call: int
) -> Pair:
    """Commands per second (domain, raw) on two fresh stores, the calls alternating."""
    with fresh() as domain_url, fresh() as raw_url:
        services = {
            True: open_service(domain_url, raw=False),
            False: open_service(raw_url, raw=True),
        }
        try:
            for service in services.values():
                organise(service, workload)
            seconds = {True: 0.0, False: 0.0}
            for k, call in enumerate(_calls(commands, per_call)):
                for domain in (True, False) if k % 2 == 0 else (False, True):
                    service = services[domain]
                    start = time.perf_counter()
                    outcomes = service.submit_many(call)
                    seconds[domain] += time.perf_counter() - start
                    check_appended(outcomes)
        finally:
            for service in services.values():
                service.close()
    return Pair(len(commands) / seconds[True], len(commands) / seconds[False])


def rate_rows(
    backend: str, fresh: StoreFactory, workload: Workload, scale: Scale
) -> list[dict[str, Any]]:
    rows = []
    for per_call, commands in (
        (BATCH, workload.commands),
        (1, workload.commands[: scale.single]),
    ):
        pairs = [interleaved(fresh, workload, commands, per_call) for _ in range(scale.reps)]
        ratios = [p.ratio for p in pairs]
        ratio = median(ratios)
        target = TARGET if per_call == BATCH else None
        domain_rate = median([p.domain_rate for p in pairs])
        raw_rate = median([p.raw_rate for p in pairs])
        rows.append(
            {
                "backend": backend,
                "per_call": per_call,
                "commands_timed": len(commands),
                "repetitions": scale.reps,
                "domain_commands_per_s": domain_rate,
                "raw_appends_per_s": raw_rate,
                "domain_us_per_command": 1e6 / domain_rate,
                "raw_us_per_append": 1e6 / raw_rate,
                "extra_us_per_command": 1e6 / domain_rate - 1e6 / raw_rate,
                "ratio": ratio,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "target": target,
                "meets_target": None if target is None else ratio >= target,
                "domain_samples": [p.domain_rate for p in pairs],
                "raw_samples": [p.raw_rate for p in pairs],
            }
        )
    return rows


# -- where the domain's time goes ---------------------------------------------------------------


@dataclass
class Tally:
    """Where ``get_or_none`` found aggregates, and the time spent in each fact type's handler."""

    sources: Counter[str] = field(default_factory=Counter)
    handler_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    handled: Counter[str] = field(default_factory=Counter)


def _instrument(service: LedgerService, tally: Tally) -> None:
    original_get = service.get_or_none
    cache = service._cache

    def get_or_none(aggregate_id: UUID, pending: dict[UUID, SignedAggregate]) -> Any:
        if aggregate_id in pending:
            tally.sources["this batch"] += 1
        elif aggregate_id in cache:
            tally.sources["cache" if cache[aggregate_id] is not None else "cache (none)"] += 1
        else:
            found = original_get(aggregate_id, pending)
            tally.sources["repository" if found is not None else "repository (none)"] += 1
            return found
        return original_get(aggregate_id, pending)

    setattr(service, "get_or_none", get_or_none)  # noqa: B010 - an instance override, untimed
    for fact_type, handler in list(service.handlers.items()):
        service.handlers[fact_type] = _timed_handler(fact_type, handler, tally)


def _timed_handler(
    fact_type: str, handler: Callable[[Context], Recording], tally: Tally
) -> Callable[[Context], Recording]:
    def timed(ctx: Context) -> Recording:
        start = time.perf_counter()
        try:
            return handler(ctx)
        finally:
            tally.handler_s[fact_type] += time.perf_counter() - start
            tally.handled[fact_type] += 1

    return timed


def breakdown(
    backend: str, fresh: StoreFactory, workload: Workload, profiled: int
) -> dict[str, Any]:
    """An instrumented domain pass (aggregate sources, handler µs), then a cProfile pass."""
    tally = Tally()
    with fresh() as url:
        service = open_service(url, raw=False)
        try:
            organise(service, workload)
            _instrument(service, tally)
            for call in _calls(workload.commands, BATCH):
                check_appended(service.submit_many(call))
        finally:
            service.close()
    handlers = {
        t: {"calls": tally.handled[t], "us_per_call": tally.handler_s[t] / tally.handled[t] * 1e6}
        for t in sorted(tally.handled, key=lambda t: -tally.handler_s[t])
        if t in workload.kinds
    }
    commands = len(workload.commands)
    out: dict[str, Any] = {
        "aggregate_reads": dict(tally.sources),
        "aggregate_reads_per_command": sum(tally.sources.values()) / commands,
        "handlers": handlers,
        "handler_us_per_command": sum(
            tally.handler_s[t] for t in tally.handled if t in workload.kinds
        )
        / commands
        * 1e6,
    }
    if profiled:
        with fresh() as url:
            service = open_service(url, raw=False)
            try:
                organise(service, workload)
                profiler = cProfile.Profile()
                profiler.enable()
                for call in _calls(workload.commands[:profiled], BATCH):
                    check_appended(service.submit_many(call))
                profiler.disable()
            finally:
                service.close()
        stats = pstats.Stats(profiler)
        out["profile"] = {
            "commands": min(profiled, commands),
            "self": profile_rows(stats, 20),
            "cumulative": step_cumulative(stats, steps_for(backend, PROFILE_STEPS)),
        }
    return out


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
    say(f"domain: signing a month for {scale.employees} employees ...")
    start = time.perf_counter()
    workload = build_workload(scale)
    signing_s = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    breakdowns: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kpi-bench-") as tmp:
        work = Path(tmp)
        for backend, database in backends(pg_url, pg_is_database):
            with database as db_url:
                fresh = sqlite_stores(work) if db_url is None else pg_stores(db_url)
                say(f"domain: {backend}, domain vs raw ...")
                rows += rate_rows(backend, fresh, workload, scale)
                say(f"domain: {backend}, where the time goes ...")
                breakdowns[backend] = breakdown(backend, fresh, workload, scale.profiled)
    result = {
        "mode": mode,
        "workload": {
            "employees": workload.employees,
            "units": workload.units,
            "organisation_facts": len(workload.organisation),
            "commands": len(workload.commands),
            "kinds": dict(workload.kinds.most_common()),
            "signing_s": signing_s,
        },
        "rates": rows,
        "breakdown": breakdowns,
    }
    report(result)
    write_result(NAME, result, results_dir)
    return result


def report(result: dict[str, Any]) -> None:
    w = result["workload"]
    say()
    say(
        f"domain / workload: {w['employees']} employees, {w['units']} units,"
        f" {w['organisation_facts']} organisation facts (untimed), {w['commands']} commands: "
        + ", ".join(f"{k} {v}" for k, v in w["kinds"].items())
    )
    rows = []
    for r in result["rates"]:
        target = r["target"]
        rows.append(
            [
                r["backend"],
                r["per_call"],
                r["domain_commands_per_s"],
                r["raw_appends_per_s"],
                r["ratio"],
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                r["extra_us_per_command"],
                "-" if target is None else f">= {target}",
                "-" if target is None else verdict(r["ratio"], target),
            ]
        )
    say()
    say(
        render_table(
            "domain / LedgerService with the domain rules vs raw appends of the same envelopes"
            " (medians over repetitions)",
            [
                "backend",
                "per call",
                "domain cmd/s",
                "raw appends/s",
                "ratio",
                "range",
                "extra µs/cmd",
                "target",
                "",
            ],
            rows,
        )
    )
    for backend, b in result["breakdown"].items():
        say()
        reads = b["aggregate_reads"]
        say(
            f"domain / {backend}: aggregate reads per command"
            f" {b['aggregate_reads_per_command']:.2f}"
            " (" + ", ".join(f"{k} {v}" for k, v in reads.items()) + ");"
            f" handlers {b['handler_us_per_command']:.0f} µs per command"
        )
        say(
            render_table(
                f"domain / {backend}: handler time per fact type (validation and rules, µs)",
                ["fact type", "calls", "µs/call"],
                [[t, h["calls"], h["us_per_call"]] for t, h in b["handlers"].items()],
            )
        )
        if "profile" in b:
            say()
            say(
                profile_table(
                    f"domain / where submit_many's time goes on {backend} (cProfile,"
                    f" {b['profile']['commands']} commands)",
                    PROFILE_STEPS,
                    b["profile"]["cumulative"],
                )
            )
