"""The log's commands: init, keys, append, checkpoint, receipt, export, verify."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from api.cli import common
from api.cli.common import UsageError, read_lines, sealing_checkpointer, submit_one
from api.progress import ProgressBar
from domain.admission import REFUSED, Admission, RefusedEntry, replay_log
from domain.errors import AlreadyInitialised, Refusal
from domain.service import LedgerService
from ledger.checkpoints import EmptyLogError, InconsistentLogError
from ledger.config import database_url, parse_database
from ledger.export import export_bundle
from ledger.home import LedgerHome, home_path
from ledger.online import DatabaseSource, signer_state_root
from signing.bundle import ExportSource
from signing.checkpoint import verify_checkpoint
from signing.errors import NoteError, ProofError
from signing.facts import sign_fact
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
        signed = sealing_checkpointer(service, home).checkpoint()
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
    appended = submit_one(args, envelope.to_bytes())
    print(f"{appended.seq}\tkey {public.keyid} registered for {args.name}")
    return 0


def cmd_revoke_key(args: argparse.Namespace) -> int:
    signer = read_signing_key(Path(args.signer)) if args.signer else _admin_key(args)
    envelope = sign_fact(signer, "key.revoked", {"keyid": args.keyid, "reason": args.reason})
    appended = submit_one(args, envelope.to_bytes())
    print(f"{appended.seq}\tkey {args.keyid} revoked")
    return 0


def cmd_append(args: argparse.Namespace) -> int:
    service = common.service(args)
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

        for number, line in read_lines(args.file):
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
        checkpointer = sealing_checkpointer(service, home)
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
    from signing.entry import decode_entry
    from signing.errors import EntryError
    from signing.merkle import leaf_hash, verify_inclusion

    keys = read_verifier_keys(Path(args.log_key))
    # Files that are not a receipt or an entry (an HTTP error body saved by `curl -s`) are bad
    # input, exit 2 — never a failed check, which would be a false integrity alarm.
    try:
        proof = TlogProof.parse(Path(args.receipt).read_text())
    except (ProofError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{args.receipt} is not a receipt (c2sp.org/tlog-proof@v1): {exc}; an HTTP error"
            " saved by curl? (curl -f, or --fail-with-body, exits non-zero on one)"
        ) from None
    entry = Path(args.entry).read_bytes()
    try:
        seq = decode_entry(entry).seq
    except EntryError as exc:
        raise UsageError(
            f"{args.entry} is not a log entry: {exc}; an HTTP error saved by curl? (curl -f, or"
            " --fail-with-body, exits non-zero on one)"
        ) from None
    if seq != proof.index:
        raise UsageError(f"{args.entry} is entry {seq}, the receipt is for entry {proof.index}")
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
