"""``kpi-ledger``: the command line.

Every command takes ``--db URL`` (or ``KPI_LEDGER_DB``; default ``sqlite:///kpi-ledger.db``)
and ``--home DIR`` (or ``KPI_LEDGER_HOME``; default ``./.kpi-ledger``, where the ledger's
checkpoint key and the first administrator key live). Exit status: 0 on success, 1 when a
fact is refused or verification finds a problem, 2 on bad usage or input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from eventsourcing.persistence import PersistenceError

from api.progress import ProgressBar
from domain.admission import REFUSED, Admission, RefusedEntry, replay_log
from domain.errors import AlreadyInitialised, Refusal
from domain.policy import PolicyError
from domain.schemas import PERIOD_PATTERN
from domain.service import Appended, LedgerService, TimeWindow
from ledger.checkpoints import Checkpointer, EmptyLogError, InconsistentLogError
from ledger.config import DEFAULT_DB, ConfigError, Database, database_url, parse_database
from ledger.export import export_bundle
from ledger.home import LedgerHome, home_path
from ledger.online import DatabaseSource, signer_state_root
from projections import runners as projection_runners
from projections.engine import VIEWS, next_close_snapshot, snapshot_hash
from projections.replay import Replay, ReplayError, parse_as_of
from projections.score import Result, diff, exact, show
from signing.bundle import BundleError, ExportSource
from signing.canonical import loads_strict
from signing.checkpoint import verify_checkpoint
from signing.errors import IntegrityError, NoteError, ProofError
from signing.facts import make_payload, sign_fact, sign_payload
from signing.keyring import key_registration
from signing.keys import (
    SigningKey,
    VerifierKey,
    key_file_stem,
    read_signing_key,
    read_verifier_keys,
    write_key_pair,
)
from signing.receipt import TlogProof
from signing.verify import Problem, Report, verify

APPEND_BATCH = 100


class UsageError(Exception):
    """Bad input from the command line: exit 2 with the message."""


# -- helpers --------------------------------------------------------------------------------


def _service(args: argparse.Namespace) -> LedgerService:
    home = LedgerHome(home_path(args.home))
    database = parse_database(database_url(args.db))
    raw = os.environ.get("KPI_LEDGER_CHECKPOINT_EVERY", "0") or "0"
    if not raw.isdigit():
        raise UsageError(f"KPI_LEDGER_CHECKPOINT_EVERY must be a whole number, got {raw!r}")
    every = int(raw)
    flag = getattr(args, "checkpoint_every", None)
    every = flag if flag is not None else every  # --checkpoint-every 0 switches it off
    if every and not home.exists():
        raise UsageError(f"checkpoints every {every} entries need the ledger home {home.path}")
    try:
        window = TimeWindow.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    signer = home.facts_key() if home.exists() else None
    service = LedgerService(database, ledger_signer=signer, window=window)
    if every and home.exists():
        checkpointer = _checkpointer(service, home, every)
        service.after_append = checkpointer.maybe_checkpoint
    return service


def _submit_one(args: argparse.Namespace, envelope: bytes) -> Appended:
    service = _service(args)
    try:
        return service.submit(envelope)
    finally:
        service.close()


def _checkpointer(
    service: LedgerService, home: LedgerHome, every: int | None = None
) -> Checkpointer:
    """The service's checkpointer: it seals only what the intake would accept."""
    from domain.admission import sealing_checkpointer

    return sealing_checkpointer(service.sealed, home, every_entries=every)


def _read_lines(source: str) -> Iterator[tuple[int, str]]:
    handle: TextIO = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    try:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line.strip()
    finally:
        if handle is not sys.stdin:
            handle.close()


def _print_report(report: Report, out: TextIO) -> None:
    if report.ok:
        out.write(
            f"OK: {report.size} entries, {report.signatures_checked} signatures, "
            f"{len(report.checkpoints)} checkpoints verified"
            + (
                f" (latest size {report.checkpoints[-1].checkpoint.size})"
                if report.checkpoints
                else ""
            )
            + "".join(f" and {t.label} (size {t.size})" for t in report.trusted)
            + "\n"
        )
        return
    out.write(f"FAILED: {len(report.problems)} problem(s) in {report.size} entries\n")
    out.write("seq\tkind\tdetail\n")
    for problem in report.problems:
        out.write(problem.line() + "\n")


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low..high``."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            bounds = f"{low}..{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be a whole number, {bounds}: {text!r}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite period of at least one second."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, at least 1: {text!r}")
    return value


# -- commands -------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    home = LedgerHome(home_path(args.home))
    database = parse_database(database_url(args.db))
    origin = args.origin or f"kpi-ledger.local/{secrets.token_hex(4)}"
    admin = SigningKey.generate(args.admin)  # checks the name before anything is written
    admin_file = home.path / (key_file_stem(admin.name) + ".key")
    if admin_file in home.own_key_files:
        raise UsageError(f"--admin {args.admin!r} would overwrite the home's own {admin_file.name}")
    service = LedgerService(database)
    try:
        appended = service.initialise(home, origin, admin)
        write_key_pair(admin, home.path)
        signed = _checkpointer(service, home).checkpoint()
    except AlreadyInitialised as exc:
        raise UsageError(str(exc)) from None
    finally:
        service.close()
    print(f"ledger initialised at {database.display}")
    print(f"  origin:          {origin}")
    print(f"  home:            {home.path}")
    print(f"  log verifier:    {home.vkey_path}")
    print(f"  administrator:   {admin_file} (entry {appended.seq})")
    print(f"  first checkpoint: size {signed.checkpoint.size}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    key = SigningKey.generate(args.name)
    private, public = write_key_pair(key, Path(args.out))
    print(f"private key: {private}\npublic key:  {public}\nkey id:      {key.keyid}")
    return 0


def _admin_key(args: argparse.Namespace) -> SigningKey:
    path = Path(args.admin_key) if args.admin_key else None
    if path is None:
        candidates = LedgerHome(home_path(args.home)).administrator_keys()
        if len(candidates) != 1:
            raise UsageError("say which administrator key signs: --admin-key FILE")
        path = candidates[0]
    return read_signing_key(path)


def cmd_register_key(args: argparse.Namespace) -> int:
    keys = read_verifier_keys(Path(args.pubfile))
    if len(keys) != 1:
        raise UsageError(f"{args.pubfile} holds {len(keys)} keys: register one key at a time")
    public = keys[0]
    if public.name != args.name:
        raise UsageError(f"{args.pubfile} holds a key named {public.name!r}, not {args.name!r}")
    admin = _admin_key(args)
    envelope = key_registration(admin, public, admin=bool(args.admin))
    appended = _submit_one(args, envelope.to_bytes())
    print(f"{appended.seq}\tkey {public.keyid} registered for {args.name}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    signer = read_signing_key(Path(args.signer)) if args.signer else _admin_key(args)
    envelope = sign_fact(signer, "key.revoked", {"keyid": args.keyid, "reason": args.reason})
    appended = _submit_one(args, envelope.to_bytes())
    print(f"{appended.seq}\tkey {args.keyid} revoked")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key = read_signing_key(Path(args.keyfile))
    text = sys.stdin.read() if args.payload == "-" else Path(args.payload).read_text("utf-8")
    try:
        body = loads_strict(text, what=args.payload)
    except IntegrityError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(body, dict) or "type" not in body or "data" not in body:
        raise UsageError('the payload file must be {"type": "...", "data": {...}}')
    unknown = set(body) - {"type", "data", "actor", "idempotency_key"}
    if unknown:
        raise UsageError(f"unexpected fields {sorted(unknown)}: key id, time and nonce are added")
    payload = make_payload(
        key,
        body["type"],
        body["data"],
        actor=body.get("actor"),
        idempotency_key=body.get("idempotency_key"),
    )
    sys.stdout.write(sign_payload(key, payload).to_bytes().decode() + "\n")
    return 0


def cmd_append(args: argparse.Namespace) -> int:
    service = _service(args)
    refused = 0
    try:
        batch: list[tuple[int, str]] = []

        def flush() -> None:
            nonlocal refused
            outcomes = service.submit_many([line for _, line in batch])
            for (number, _), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Refusal):
                    refused += 1
                    sys.stderr.write(f"line {number}: refused {outcome}\n")
                else:
                    sys.stdout.write(f"{outcome.seq}\n")
                    if outcome.duplicate:
                        sys.stderr.write(f"line {number}: already recorded at {outcome.seq}\n")
                    for derived in outcome.derived:
                        sys.stderr.write(
                            f"line {number}: the ledger appended derived entry {derived.seq}\n"
                        )
            batch.clear()

        for number, line in _read_lines(args.file):
            batch.append((number, line))
            if len(batch) >= APPEND_BATCH:
                flush()
        if batch:
            flush()
    finally:
        service.close()
    return 1 if refused else 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    home = LedgerHome(home_path(args.home))
    service = LedgerService(parse_database(database_url(args.db)))
    try:
        checkpointer = _checkpointer(service, home)
        if args.every_seconds:
            import time

            from ledger.jobs import FAILED, REFUSING, RETRYING, STANDBY

            job = checkpointer.run_every(args.every_seconds, database=service.database)
            sys.stderr.write(
                f"signing a checkpoint every {args.every_seconds}s (Ctrl-C stops); database"
                " errors are retried, a refusal stops it\n"
            )
            try:
                said = ""
                while job.alive and job.health().state not in (REFUSING, FAILED):
                    state = job.health().state
                    if state in (STANDBY, RETRYING) and state != said:
                        sys.stderr.write(f"checkpointer: {job.health().summary()}\n")
                    said = state
                    time.sleep(0.2)
            except KeyboardInterrupt:
                job.stop()
                return 0
            health = job.health()
            job.stop()
            if health.state == REFUSING and checkpointer.error is not None:
                raise checkpointer.error
            sys.stderr.write(f"checkpointer stopped: {health.summary()}\n")
            return 1
        signed = checkpointer.checkpoint()
    except InconsistentLogError as exc:
        sys.stderr.write(f"refused to sign: {exc}\n")
        return 1
    except EmptyLogError as exc:
        raise UsageError(str(exc)) from None
    finally:
        service.close()
    sys.stdout.write(signed.note)
    return 0


def cmd_receipt(args: argparse.Namespace) -> int:
    if args.seq < 0:
        raise UsageError("a sequence number is 0 or more")
    service = LedgerService(parse_database(database_url(args.db)))
    try:
        latest = service.sealed.latest_checkpoint()
        if latest is None or latest.size <= args.seq:
            raise UsageError(
                f"entry {args.seq} is not sealed by a checkpoint yet: run 'kpi-ledger checkpoint'"
            )
        try:
            proof = service.sealed.receipt_proof(args.seq, latest)
        except ProofError as exc:
            sys.stderr.write(f"no receipt: {exc}; run 'kpi-ledger verify'\n")
            return 1
    finally:
        service.close()
    sys.stdout.write(TlogProof(args.seq, tuple(proof), latest.note).format())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    service = LedgerService(parse_database(database_url(args.db)))
    bar = ProgressBar("export", enabled=True if args.progress else None)
    try:
        counts = export_bundle(service.sealed, Path(args.dir), progress=bar)
    finally:
        bar.close()
        service.close()
    print(
        f"exported {counts['entries']} entries and {counts['checkpoints']} checkpoints "
        f"to {args.dir}"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    keys = _trusted_keys(args)
    refused: int | None = None  # entries the rule replay refused (None: not replayed)
    bar = ProgressBar("verify", enabled=True if args.progress else None)
    workers = args.workers
    try:
        if args.dir:
            with ExportSource(Path(args.dir)) as source:
                report = verify(source, keys, workers=workers, progress=bar)
                if args.rules:  # off by default for a bundle
                    rows = ((s, e) for s, e, _ in source.entries())
                    refused = _add_refusals(report, replay_log(rows))
        else:
            # The home's record of what this ledger signed: a root the database cannot unsay.
            state = signer_state_root(LedgerHome(home_path(args.home)))
            trusted = [state] if state is not None else []
            service = LedgerService(parse_database(database_url(args.db)))
            try:
                database = DatabaseSource(service.sealed)
                report = verify(database, keys, trusted=trusted, workers=workers, progress=bar)
                if args.rules is not False:  # on by default for the database
                    admission = Admission(service.sealed, None, detect_principal=True)
                    refused = _add_refusals(report, admission.refusals(0, database.size_hint()))
            finally:
                service.close()
    finally:
        bar.close()
    _print_report(report, sys.stdout)
    if refused is not None:
        sys.stdout.write(
            f"rules replayed over {report.size} entries: {refused} the intake would refuse"
            " (the time window is not replayed)\n"
        )
    return 0 if report.ok else 1


def _add_refusals(report: Report, refusals: Iterable[RefusedEntry]) -> int:
    """``verify --rules``: each entry the intake would refuse is a problem at its position."""
    found = [Problem(r.seq, REFUSED, r.describe()) for r in refusals]
    report.problems = sorted(report.problems + found)
    return len(found)


def _trusted_keys(args: argparse.Namespace) -> list[VerifierKey]:
    if args.log_key:
        return read_verifier_keys(Path(args.log_key))
    if args.dir:
        raise UsageError("offline verification needs --log-key VKEY from a source you trust")
    home = LedgerHome(home_path(args.home))
    if home.vkey_path.exists():
        return home.log_keys()
    raise UsageError("no --log-key given and no log.vkey in the ledger home")


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    from signing.merkle import leaf_hash, verify_inclusion

    keys = read_verifier_keys(Path(args.log_key))
    proof = TlogProof.parse(Path(args.receipt).read_text())
    entry = Path(args.entry).read_bytes()
    try:
        signed = verify_checkpoint(proof.checkpoint, keys)
        verify_inclusion(
            leaf_hash(entry),
            proof.index,
            signed.checkpoint.size,
            proof.proof,
            signed.checkpoint.root,
        )
    except (NoteError, ProofError) as exc:
        print(f"FAILED: {exc}")
        return 1
    print(f"OK: entry {proof.index} is in the log of size {signed.checkpoint.size}")
    return 0


def _ledger_database(args: argparse.Namespace) -> Database:
    """The database of an existing ledger: a SQLite file that does not exist is refused
    rather than created empty."""
    database = parse_database(database_url(args.db))
    path = database.env.get("SQLITE_DBNAME")
    if path is not None and not Path(path).is_file():
        raise UsageError(f"no ledger at {path}: run 'kpi-ledger init' or pass --db")
    return database


def _period(text: str) -> str:
    if not re.fullmatch(PERIOD_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a period: write 2026-03 or 2026-Q1")
    return text


def _caught_up_view(database: Database) -> Any:
    """The evaluation views, brought up to the head of the log first unless a running
    service's runner holds the writer lock (then they are as current as it keeps them)."""
    with contextlib.suppress(projection_runners.RunnerBusy):
        projection_runners.catch_up(database)
    return projection_runners.open_view(database)


def _as_of(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return parse_as_of(text)
    except ValueError as exc:
        raise UsageError(f"--as-of: {exc}") from None


def _print_result(result: Result, *, trace: bool) -> None:
    print(
        f"{result.employee} {result.period} as of log position {result.as_of}:"
        f" policy {result.policy} (published at {result.policy_seq}),"
        f" catalogue v{result.catalogue} (at {result.catalogue_seq})"
    )
    print(
        f"  Q {show(result.Q)}%  C {show(result.C)}%  P {show(result.P)}%"
        f"  E {show(result.E)}%  S {show(result.S)}%"
    )
    print(
        f"  task {show(result.task)} + general {show(result.general)} = {show(result.total)}"
        f" -> {result.grade}"
        + (f" (points: {result.points_grade})" if result.grade != result.points_grade else "")
        + f"  [exact total {exact(result.total)}]"
    )
    for why in result.overrides:
        print(f"  override: {why}")
    if trace:
        for line in result.trace:
            where = f"{line.seq:>8}" if line.seq is not None else " " * 8
            rule = f"  [{line.rule}]" if line.rule else ""
            print(f"  {where}  {line.fact or '-':<32} {line.subject:<14} {line.effect}{rule}")


def cmd_score(args: argparse.Namespace) -> int:
    view = _caught_up_view(_ledger_database(args))
    try:
        replay = Replay(view)
        try:
            result = replay.score(
                args.employee, args.period, as_of=_as_of(args.as_of), policy=args.policy
            )
            other = None
            if args.diff_as_of is not None or args.diff_policy is not None:
                other = replay.score(
                    args.employee,
                    args.period,
                    as_of=_as_of(args.diff_as_of)
                    if args.diff_as_of is not None
                    else _as_of(args.as_of),
                    policy=args.diff_policy if args.diff_policy is not None else args.policy,
                )
        except (ReplayError, PolicyError) as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            doc: dict[str, Any] = result.to_doc()
            if other is not None:
                doc = {"result": doc, "other": other.to_doc(), "diff": diff(result, other).to_doc()}
            print(json.dumps(doc, ensure_ascii=False, indent=2))
            return 0
        _print_result(result, trace=args.trace)
        if other is not None:
            print()
            _print_result(other, trace=args.trace)
            d = diff(result, other)
            print("\ndifference:")
            for what, before, after in d.changes:
                print(f"  {what}: {before} -> {after}")
            for line in d.only_before:
                print(f"  only in the first:  {line.seq} {line.fact} {line.subject}: {line.effect}")
            for line in d.only_after:
                print(f"  only in the second: {line.seq} {line.fact} {line.subject}: {line.effect}")
        return 0
    finally:
        projection_runners.close_view(view)


def cmd_rebuild(args: argparse.Namespace) -> int:
    database = _ledger_database(args)
    view = projection_runners.open_view(database)
    total = view.head()[0] + 1
    projection_runners.close_view(view)
    bar = ProgressBar(f"rebuild {args.name}", enabled=True if args.progress else None)
    try:
        done = projection_runners.rebuild(database, progress=lambda n: bar(n, total))
    except projection_runners.RunnerBusy as exc:
        raise UsageError(f"{exc}: stop the running service first") from None
    finally:
        bar.close()
    print(f"rebuilt {args.name} from {done} entries")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    view = _caught_up_view(_ledger_database(args))
    try:
        if view.doc("unit", f"{args.agency}/{args.period}") is None:
            raise UsageError(f"no scores for agency {args.agency!r} in {args.period}")
        published = next_close_snapshot(view, args.agency, args.period)
        if args.json:
            print(json.dumps(published, ensure_ascii=False, indent=2))
        print(snapshot_hash(published))
        return 0
    finally:
        projection_runners.close_view(view)


def cmd_show(args: argparse.Namespace) -> int:
    view = _caught_up_view(_ledger_database(args))
    try:
        docs = view.find(args.view, employee=args.employee, agency=args.agency, period=args.period)
        if args.open:
            docs = [d for d in docs if d.get("open")]
        for doc in docs:
            print(json.dumps(doc, ensure_ascii=False, sort_keys=True))
        return 0
    finally:
        projection_runners.close_view(view)


def cmd_demo(args: argparse.Namespace) -> int:
    """Seed a realistic signed history (api/demo.py)."""
    from api.demo import DemoError, DemoOptions, DemoRefused, print_summary, run_demo

    database = parse_database(database_url(args.db))
    home = LedgerHome(home_path(args.home))
    options = DemoOptions(
        seed=args.seed,
        employees=args.employees,
        months=args.months,
        start=args.start,
        keys_out=Path(args.keys_out) if args.keys_out else None,
        workers=args.workers,
    )
    try:
        result = run_demo(database, home, options, progress=True if args.progress else None)
    except DemoError as exc:
        raise UsageError(str(exc)) from None
    except DemoRefused as exc:
        sys.stderr.write(f"kpi-ledger demo: {exc}\n")
        return 1
    print_summary(
        result, database, home, options, db_flag=args.db, home_flag=args.home, out=sys.stdout
    )
    return 0


def cmd_principal(args: argparse.Namespace) -> int:
    """Issue, withdraw or list the API's bearer tokens (api/principals.py)."""
    from api.principals import PrincipalError, Principals

    service = LedgerService(_ledger_database(args))
    try:
        principals = Principals(service.sealed.datastore)  # type: ignore[attr-defined]
        if args.action == "list":
            for record in principals.all():
                state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
                print(f"{record.name}\tissued {record.issued_at}\t{state}")
            return 0
        if not args.names:
            raise UsageError(f"principal {args.action} needs a NAME")
        if args.action == "revoke":
            for name in args.names:
                if not principals.revoke(name):
                    raise UsageError(f"{name!r} has no token in force")
                print(f"revoked the token of {name}")
            return 0
        keys = service.refresh_keyring().keys.values()
        for name in args.names:  # all checked before any token is issued
            if not any(r.principal == name and r.revoked_at is None for r in keys):
                raise UsageError(
                    f"{name!r} has no key in force in the log: register its key first"
                    " (kpi-ledger register-key); its facts must be signed with it"
                )
        try:
            tokens = [(name, principals.issue(name)) for name in args.names]
        except PrincipalError as exc:
            raise UsageError(str(exc)) from None
    finally:
        service.close()
    sys.stderr.write(
        "tokens are shown once, stored only as their SHA-256; a new one replaces the old\n"
    )
    if len(tokens) == 1:
        print(tokens[0][1])
    else:
        for name, token in tokens:
            print(f"{name}\t{token}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP API (api/app.py) with the projection runner and the checkpointer.

    With ``--workers N`` (N > 1, PostgreSQL only) N processes serve requests on the same port
    and this one runs the projection runner and the checkpointer (``api/workers.py``)."""
    import uvicorn

    from api.app import create_app
    from api.runtime import Settings
    from api.workers import serve_workers

    database = _ledger_database(args)
    home = LedgerHome(home_path(args.home))
    settings = Settings(
        database,
        home,
        checkpoint_seconds=args.checkpoint_seconds,
        quiet_gc=True,
        exit_on_fatal=True,
    )
    if args.workers > 1 and database.backend != "postgres":
        raise UsageError(
            "--workers needs PostgreSQL (--db postgresql://...): a SQLite ledger has one"
            " writer, so one process serves it"
        )
    sys.stderr.write(
        f"kpi-ledger: starting the service for {database.display} on http://{args.host}:{args.port}/v1"
        f" (OpenAPI: /v1/openapi.json, /v1/docs)"
        + (f" with {args.workers} workers" if args.workers > 1 else "")
        + "\n"
    )
    if args.workers == 1:
        from api.runtime import FATAL, STOP_GRACE

        uvicorn.run(
            create_app(settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=STOP_GRACE,
        )
        if FATAL:  # a background job gave up: the service stopped itself
            sys.stderr.write(f"kpi-ledger: stopped: {'; '.join(FATAL)}\n")
            return 1
        return 0
    try:
        return serve_workers(
            settings,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
    except OSError as exc:
        raise UsageError(str(exc)) from None


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the API's OpenAPI document (what docs/openapi.json holds)."""
    print(openapi_text())
    return 0


def openapi_text() -> str:
    from api.app import create_app
    from api.runtime import Settings

    app = create_app(Settings(parse_database(DEFAULT_DB), LedgerHome(Path(".kpi-ledger"))))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False, sort_keys=True)


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database URL (default: $KPI_LEDGER_DB or sqlite:///kpi-ledger.db)",
    )
    common.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="ledger home with the signing keys (default: $KPI_LEDGER_HOME or ./.kpi-ledger)",
    )
    parser = argparse.ArgumentParser(
        prog="kpi-ledger",
        parents=[common],
        description="Audit-grade evaluation ledger: signed facts in a verifiable log.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", parents=[common], help="create the schema, keys and first entry")
    p.add_argument("--origin", help="the log's name in checkpoints (e.g. kpi.example.gov.vn/hr)")
    p.add_argument("--admin", default="admin", help="name of the first administrator")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("keygen", parents=[common], help="make a key pair NAME.key / NAME.pub")
    p.add_argument("name")
    p.add_argument("--out", required=True, help="directory for the key files")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("register-key", parents=[common], help="register NAME's public key")
    p.add_argument("name")
    p.add_argument("pubfile")
    p.add_argument("--admin", action="store_true", help="the key may register and revoke keys")
    p.add_argument("--admin-key", help="administrator private key (default: the one in home)")
    p.set_defaults(func=cmd_register_key)

    p = sub.add_parser("revoke-key", parents=[common], help="revoke a key from now on")
    p.add_argument("keyid")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--signer",
        help="private key signing the revocation (the key itself or an "
        "administrator; default: the administrator key in home)",
    )
    p.add_argument("--admin-key", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_revoke_key)

    p = sub.add_parser("sign", parents=[common], help="sign a payload file as a DSSE envelope")
    p.add_argument("keyfile")
    p.add_argument("payload", help='JSON {"type": ..., "data": {...}} or - for stdin')
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("append", parents=[common], help="append envelopes, one JSON per line")
    p.add_argument("file", help="file of envelopes, or - for stdin")
    p.add_argument(
        "--checkpoint-every",
        type=_count(0),
        default=None,
        help="sign a checkpoint every N entries (default $KPI_LEDGER_CHECKPOINT_EVERY)",
    )
    p.set_defaults(func=cmd_append)

    p = sub.add_parser("checkpoint", parents=[common], help="seal and print a signed checkpoint")
    p.add_argument(
        "--every-seconds",
        type=_seconds,
        default=None,
        help="keep running, signing every T seconds when the log grew",
    )
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("receipt", parents=[common], help="inclusion proof (tlog-proof) of SEQ")
    p.add_argument("seq", type=int)
    p.set_defaults(func=cmd_receipt)

    p = sub.add_parser("export", parents=[common], help="write the export bundle to DIR")
    p.add_argument("dir")
    p.add_argument("--progress", action="store_true", help="show progress even when piped")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="verify a bundle offline (DIR --log-key) or the database (--db)",
    )
    p.add_argument("dir", nargs="?", help="export bundle (directory or tar); omit for --db")
    p.add_argument("--log-key", help="the ledger's verifier key file (log.vkey) you trust")
    p.add_argument(
        "--workers", type=_count(1, 256), default=None, help="processes (default: all cores)"
    )
    p.add_argument("--progress", action="store_true", help="show progress even when piped")
    p.add_argument(
        "--rules",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay the intake's rules over every entry at its position"
        " (default: on for --db, off for a bundle)",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "verify-receipt",
        parents=[common],
        help="check a receipt against an entry file and the log key, offline",
    )
    p.add_argument("receipt")
    p.add_argument("entry", help="file with the exact entry bytes")
    p.add_argument("--log-key", required=True)
    p.set_defaults(func=cmd_verify_receipt)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="seed a new ledger with a realistic signed history (deterministic with --seed)",
    )
    p.add_argument("--seed", type=int, default=1, help="everything derives from it (default 1)")
    p.add_argument("--employees", type=int, default=60, help="12..100000 (default 60)")
    p.add_argument("--months", type=int, default=6, help="2..12 (default 6)")
    p.add_argument("--start", default="2026-01", help="first month, YYYY-MM (default 2026-01)")
    p.add_argument("--keys-out", help="write every person's and system's key pair to DIR")
    p.add_argument("--workers", type=int, default=None, help="signing processes (default auto)")
    p.add_argument("--progress", action="store_true", help="show progress even when piped")
    p.set_defaults(func=cmd_demo)

    _add_projection_commands(sub, common)
    return parser


def _add_projection_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "score",
        parents=[common],
        help="an employee's score for a period, replayed from the log",
    )
    p.add_argument("employee")
    p.add_argument("period", type=_period, help="2026-03 (month) or 2026-Q1 (quarter)")
    p.add_argument("--as-of", help="a log position or an RFC 3339 UTC time (default: now)")
    p.add_argument("--policy", type=_count(1), help="another version of the policy line (what-if)")
    p.add_argument("--trace", action="store_true", help="every fact that moved the score")
    p.add_argument("--diff-as-of", help="compare with the score as of this position or time")
    p.add_argument("--diff-policy", type=_count(1), help="compare with this policy version")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("rebuild", parents=[common], help="rebuild a projection from zero")
    p.add_argument("name", choices=projection_runners.PROJECTIONS)
    p.add_argument("--progress", action="store_true", help="always show the progress bar")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser(
        "snapshot", parents=[common], help="the hash a period.closed must carry, as of now"
    )
    p.add_argument("agency")
    p.add_argument("period", type=_period)
    p.add_argument("--json", action="store_true", help="also print the snapshot document")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("serve", parents=[common], help="run the HTTP API (with the projections)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_count(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument(
        "--checkpoint-seconds",
        type=_seconds,
        default=1.0,
        help="sign a checkpoint this often when the log grew (default 1)",
    )
    p.add_argument(
        "--workers",
        type=_count(1, 64),
        default=1,
        help="request-serving processes (default 1; more than 1 needs PostgreSQL)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("openapi", parents=[common], help="print the API's OpenAPI document")
    p.set_defaults(func=cmd_openapi)

    p = sub.add_parser("principal", parents=[common], help="API tokens: add, revoke, list")
    p.add_argument("action", choices=["add", "revoke", "list"])
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="principals (people or systems with a key); several: NAME<TAB>TOKEN lines",
    )
    p.set_defaults(func=cmd_principal)

    p = sub.add_parser("show", parents=[common], help="print a read model's documents (JSON lines)")
    p.add_argument("view", choices=VIEWS)
    p.add_argument("--employee")
    p.add_argument("--agency")
    p.add_argument("--period", help="a period, a quarter or a year, as the view keys it")
    p.add_argument(
        "--open", action="store_true", help="only open items (appeals, HR decisions due)"
    )
    p.set_defaults(func=cmd_show)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("db", "home"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        code: int = args.func(args)
        return code
    except Refusal as refusal:
        sys.stderr.write(f"refused: {refusal}\n")
        return 1
    except PersistenceError as exc:
        where = parse_database(database_url(args.db)).display
        sys.stderr.write(f"kpi-ledger {args.command}: cannot use the database {where}: {exc}\n")
        return 2
    except (
        UsageError,
        ConfigError,
        IntegrityError,
        BundleError,
        OSError,  # files: missing, existing, a directory, no permission...
        UnicodeDecodeError,
        json.JSONDecodeError,
    ) as exc:
        sys.stderr.write(f"kpi-ledger {args.command}: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
