"""What the command modules share: the usage error, argparse types and the service.

Kept cheap to import (the parser uses the types): anything heavy is imported inside the
function that needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from domain.service import Appended, LedgerService
    from ledger.checkpoints import Checkpointer
    from ledger.config import Database
    from ledger.home import LedgerHome

# domain/schemas.py's PERIOD_PATTERN (a test keeps the two equal: importing pydantic for the
# parser alone would cost more than the rest of --help)
PERIOD_PATTERN = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2]|Q[1-4])$"
# projections.runners.PROJECTIONS and projections.engine.VIEWS, for the parser's choices
PROJECTIONS = ("evaluations",)
VIEWS = (
    "score",
    "trace",
    "quarter",
    "year",
    "unit",
    "snapshot",
    "appeal",
    "hr_due",
    "flag",
    "finding",
    "hr_decision",
)


class UsageError(Exception):
    """Bad input from the command line: exit 2 with the message."""


# -- argparse types ---------------------------------------------------------------------------


def count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``low..high``."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            bounds = f"{low}..{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"must be a whole number, {bounds}: {text!r}")
        return int(text)

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite period of at least one second."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, at least 1: {text!r}")
    return value


def period(text: str) -> str:
    if not re.fullmatch(PERIOD_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a period: write 2026-03 or 2026-Q1")
    return text


def utc_time(text: str) -> str:
    """An argparse type: an RFC 3339 UTC time (``2026-03-19T03:00:00Z``), as written."""
    from signing.canonical import parse_time
    from signing.errors import IntegrityError

    try:
        parse_time(text, field="the time")
    except IntegrityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# -- the ledger -------------------------------------------------------------------------------


def home_of(args: argparse.Namespace) -> LedgerHome:
    from ledger.home import LedgerHome, home_path

    return LedgerHome(home_path(args.home))


def database_of(args: argparse.Namespace) -> Database:
    from ledger.config import database_url, parse_database

    return parse_database(database_url(args.db))


def ledger_database(args: argparse.Namespace) -> Database:
    """The database of an existing ledger: a SQLite file that does not exist is refused
    rather than created empty."""
    database = database_of(args)
    path = database.env.get("SQLITE_DBNAME")
    if path is not None and not Path(path).is_file():
        raise UsageError(f"no ledger at {path}: run 'kpi-ledger init' or pass --db")
    return database


def service(args: argparse.Namespace) -> LedgerService:
    """The ledger service for a write: the time window from the environment, the home's
    key for derived facts, and a checkpoint every N entries if asked."""
    from domain.service import LedgerService, TimeWindow

    home = home_of(args)
    database = database_of(args)
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
    ledger = LedgerService(database, ledger_signer=signer, window=window)
    if every and home.exists():
        checkpointer = sealing_checkpointer(ledger, home, every)
        ledger.after_append = checkpointer.maybe_checkpoint
    return ledger


def submit_one(args: argparse.Namespace, envelope: bytes) -> Appended:
    ledger = service(args)
    try:
        return ledger.submit(envelope)
    finally:
        ledger.close()


def sealing_checkpointer(
    ledger: LedgerService, home: LedgerHome, every: int | None = None
) -> Checkpointer:
    """The service's checkpointer: it seals only what the intake would accept."""
    from domain.admission import sealing_checkpointer as make

    return make(ledger.sealed, home, every_entries=every)


def caught_up_view(database: Database) -> Any:
    """The evaluation views, brought up to the head of the log first unless a running
    service's runner holds the writer lock (then they are as current as it keeps them)."""
    from projections import runners

    with contextlib.suppress(runners.RunnerBusy):
        runners.catch_up(database)
    return runners.open_view(database)


def read_lines(source: str) -> Iterator[tuple[int, str]]:
    handle: TextIO = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    try:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, line.strip()
    finally:
        if handle is not sys.stdin:
            handle.close()
