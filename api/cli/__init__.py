"""``kpi-ledger``: the command line.

Every command takes ``--db URL`` (or ``KPI_LEDGER_DB``; default ``sqlite:///kpi-ledger.db``)
and ``--home DIR`` (or ``KPI_LEDGER_HOME``; default ``./.kpi-ledger``, where the ledger's
checkpoint key and the first administrator key live). Exit status: 0 on success, 1 when a
fact is refused or verification finds a problem, 2 on bad usage or input.

The parser imports nothing heavy: each command lives in a module of this package (``sign``,
``log``, ``views``, ``service``) imported only when that command runs, so ``--help`` and
``--version`` start in a few tens of milliseconds (``bench/cli.py`` measures it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from api.cli.common import PROJECTIONS, VIEWS, UsageError, count, period, seconds, utc_time

__all__ = ["UsageError", "build_parser", "main", "openapi_text", "version"]

DEMO = "--db sqlite:///demo.db --home demo-home"  # what `kpi-ledger demo` examples use


def version() -> str:
    """The installed package's version (its metadata; no module of ours imported)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("kpi-ledger")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print kpi-ledger's version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"kpi-ledger {version()}\n")
        parser.exit()


def openapi_text() -> str:
    """The API's OpenAPI document (what docs/openapi.json holds)."""
    from api.cli.service import openapi_text as text

    return text()


# -- parser ---------------------------------------------------------------------------------


def _command(
    sub: Any,
    common: argparse.ArgumentParser,
    name: str,
    handler: str,
    help: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand run by ``handler`` (``module:function`` in this package), with
    ``example`` (one or more command lines) at the end of its help."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=[common],
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog="example:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler)
    return p


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
        epilog="example (a demo ledger, then a score with every fact behind it):\n"
        f"  kpi-ledger demo {DEMO} --keys-out demo-keys --start 2026-01\n"
        f"  kpi-ledger score lan.nguyen 2026-03 --trace {DEMO}\n"
        "each command's own help: kpi-ledger COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _log_commands(sub, common)
    _view_commands(sub, common)
    _service_commands(sub, common)
    return parser


def _log_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub,
        common,
        "init",
        "log:cmd_init",
        "create the schema, keys and first entry",
        "kpi-ledger init --db sqlite:///ledger.db --origin kpi.example.gov.vn/khanh-hoa",
    )
    p.add_argument("--origin", help="the log's name in checkpoints (e.g. kpi.example.gov.vn/hr)")
    p.add_argument("--admin", default="admin", help="name of the first administrator")

    p = _command(
        sub,
        common,
        "keygen",
        "sign:cmd_keygen",
        "make a key pair NAME.key / NAME.pub",
        "kpi-ledger keygen lan.nguyen --out keys   # keys/lan.nguyen.key and keys/lan.nguyen.pub",
    )
    p.add_argument("name")
    p.add_argument("--out", required=True, help="directory for the key files")

    p = _command(
        sub,
        common,
        "register-key",
        "log:cmd_register_key",
        "register NAME's public key",
        "kpi-ledger register-key lan.nguyen keys/lan.nguyen.pub   # signed by the home's admin",
    )
    p.add_argument("name")
    p.add_argument("pubfile")
    p.add_argument("--admin", action="store_true", help="the key may register and revoke keys")
    p.add_argument("--admin-key", help="administrator private key (default: the one in home)")

    p = _command(
        sub,
        common,
        "revoke-key",
        "log:cmd_revoke_key",
        "revoke a key from now on",
        "kpi-ledger revoke-key KEYID --reason 'laptop lost'   # KEYID: see keygen's output",
    )
    p.add_argument("keyid")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--signer",
        help="private key signing the revocation (the key itself or an "
        "administrator; default: the administrator key in home)",
    )
    p.add_argument("--admin-key", help=argparse.SUPPRESS)

    p = _command(
        sub,
        common,
        "sign",
        "sign:cmd_sign",
        "sign a payload file as a DSSE envelope",
        """
echo '{"type":"work.approved","data":{"item":"ITEM"}}' > ok.json   # ITEM: see show trace
kpi-ledger sign demo-keys/tuan.tran.key ok.json | kpi-ledger append - --db sqlite:///demo.db
kpi-ledger sign demo-keys/lan.nguyen.key decl.json --time 2026-03-19T03:00:00Z > late.jsonl
# --time: the time the fact claims; the ledger accepts it within KPI_LEDGER_MAX_BACKDATE
# (default 72h) before its clock and KPI_LEDGER_MAX_AHEAD (default 5m) after it""",
    )
    p.add_argument("keyfile")
    p.add_argument("payload", help='JSON {"type": ..., "data": {...}} or - for stdin')
    p.add_argument(
        "--time",
        type=utc_time,
        default=None,
        help="the time the fact claims, RFC 3339 UTC (default: now)",
    )

    p = _command(
        sub,
        common,
        "append",
        "log:cmd_append",
        "append envelopes, one JSON per line",
        "kpi-ledger append envelopes.jsonl --checkpoint-every 100   # - reads stdin",
    )
    p.add_argument("file", help="file of envelopes, or - for stdin")
    p.add_argument(
        "--checkpoint-every",
        type=count(0),
        default=None,
        help="sign a checkpoint every N entries (default $KPI_LEDGER_CHECKPOINT_EVERY)",
    )

    p = _command(
        sub,
        common,
        "checkpoint",
        "log:cmd_checkpoint",
        "seal and print a signed checkpoint",
        f"kpi-ledger checkpoint {DEMO}\nkpi-ledger checkpoint --every-seconds 5 {DEMO}",
    )
    p.add_argument(
        "--every-seconds",
        type=seconds,
        default=None,
        help="keep running, signing every T seconds when the log grew",
    )

    p = _command(
        sub,
        common,
        "receipt",
        "log:cmd_receipt",
        "inclusion proof (tlog-proof) of SEQ",
        f"kpi-ledger receipt 3 {DEMO} > entry3.tlog-proof",
    )
    p.add_argument("seq", type=int)

    p = _command(
        sub,
        common,
        "export",
        "log:cmd_export",
        "write the export bundle to DIR",
        f"kpi-ledger export demo-bundle {DEMO}",
    )
    p.add_argument("dir")
    p.add_argument("--progress", action="store_true", help="show progress even when piped")

    p = _command(
        sub,
        common,
        "verify",
        "log:cmd_verify",
        "verify a bundle offline (DIR --log-key) or the database (--db)",
        f"kpi-ledger verify demo-bundle --log-key demo-home/log.vkey\nkpi-ledger verify {DEMO}",
    )
    p.add_argument("dir", nargs="?", help="export bundle (directory or tar); omit for --db")
    p.add_argument("--log-key", help="the ledger's verifier key file (log.vkey) you trust")
    p.add_argument(
        "--workers", type=count(1, 256), default=None, help="processes (default: all cores)"
    )
    p.add_argument("--progress", action="store_true", help="show progress even when piped")
    p.add_argument(
        "--rules",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay the intake's rules over every entry at its position"
        " (default: on for --db, off for a bundle)",
    )

    p = _command(
        sub,
        common,
        "verify-receipt",
        "log:cmd_verify_receipt",
        "check a receipt against an entry file and the log key, offline",
        "kpi-ledger verify-receipt entry3.tlog-proof entry3.bin --log-key demo-home/log.vkey",
    )
    p.add_argument("receipt")
    p.add_argument("entry", help="file with the exact entry bytes")
    p.add_argument("--log-key", required=True)


def _view_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub,
        common,
        "score",
        "views:cmd_score",
        "an employee's score for a period, replayed from the log",
        f"kpi-ledger score lan.nguyen 2026-03 --trace {DEMO}\n"
        f"kpi-ledger score lan.nguyen 2026-Q1 --as-of 2026-04-01T00:00:00Z {DEMO}",
    )
    p.add_argument("employee")
    p.add_argument("period", type=period, help="2026-03 (month) or 2026-Q1 (quarter)")
    p.add_argument("--as-of", help="a log position or an RFC 3339 UTC time (default: now)")
    p.add_argument("--policy", type=count(1), help="another version of the policy line (what-if)")
    p.add_argument("--trace", action="store_true", help="every fact that moved the score")
    p.add_argument("--diff-as-of", help="compare with the score as of this position or time")
    p.add_argument("--diff-policy", type=count(1), help="compare with this policy version")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = _command(
        sub,
        common,
        "rebuild",
        "views:cmd_rebuild",
        "rebuild a projection from zero",
        f"kpi-ledger rebuild evaluations --progress {DEMO}",
    )
    p.add_argument("name", choices=PROJECTIONS)
    p.add_argument("--progress", action="store_true", help="always show the progress bar")

    p = _command(
        sub,
        common,
        "snapshot",
        "views:cmd_snapshot",
        "the hash a period.closed must carry, as of now",
        f"kpi-ledger snapshot KH-NT 2026-03 --json {DEMO}",
    )
    p.add_argument("agency")
    p.add_argument("period", type=period)
    p.add_argument("--json", action="store_true", help="also print the snapshot document")

    p = _command(
        sub,
        common,
        "close",
        "views:cmd_close",
        "close an agency's period: compute the snapshot, show it, sign and submit the close",
        f"kpi-ledger close KH-NT 2026-06 --key demo-keys/hoa.tran.key {DEMO}\n"
        "# shows the snapshot hash, the people and their grades, then asks (--yes: does not);\n"
        "# on the demo started 2026-01, June is its last month, left open",
    )
    p.add_argument("agency")
    p.add_argument("period", type=period)
    p.add_argument("--key", required=True, help="private key of an HR officer of the agency")
    p.add_argument(
        "--yes", action="store_true", help="sign without asking (needed when stdin is no terminal)"
    )

    p = _command(
        sub,
        common,
        "show",
        "views:cmd_show",
        "print a read model's documents (JSON lines)",
        f"kpi-ledger show unit --agency KH-NT --period 2026-03 {DEMO}\n"
        f"kpi-ledger show unit --agency KH-NT --period 2026-03 --diff-policy 2 {DEMO}\n"
        f"kpi-ledger show appeal --open {DEMO}\n"
        f"kpi-ledger show refusals --rule separation.self_approval {DEMO}",
    )
    p.add_argument("view", choices=(*VIEWS, "refusals"), help="refusals: the refusal journal")
    p.add_argument("--actor", help="refusals: only those of this actor")
    p.add_argument("--rule", help="refusals: only those of this rule")
    p.add_argument("--employee")
    p.add_argument("--agency")
    p.add_argument("--period", help="a period, a quarter or a year, as the view keys it")
    p.add_argument(
        "--open", action="store_true", help="only open items (appeals, HR decisions due)"
    )
    p.add_argument("--as-of", help="unit: replayed as of a log position or RFC 3339 UTC time")
    p.add_argument("--policy", type=count(1), help="unit: replayed under this policy version")
    p.add_argument("--diff-as-of", help="unit: compare with the unit as of this position or time")
    p.add_argument("--diff-policy", type=count(1), help="unit: compare with this policy version")


def _service_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = _command(
        sub,
        common,
        "demo",
        "service:cmd_demo",
        "seed a new ledger with a realistic signed history (deterministic with --seed)",
        f"kpi-ledger demo {DEMO} --keys-out demo-keys --start 2026-01   # January to June\n"
        "kpi-ledger demo --db sqlite:///big.db --home big-home --employees 2000 --months 12",
    )
    p.add_argument("--seed", type=int, default=1, help="everything derives from it (default 1)")
    p.add_argument("--employees", type=int, default=60, help="12..100000 (default 60)")
    p.add_argument("--months", type=int, default=6, help="2..12 (default 6)")
    p.add_argument(
        "--start",
        default=None,
        help="first month, YYYY-MM (default: the months that end with the current one)",
    )
    p.add_argument("--keys-out", help="write every person's and system's key pair to DIR")
    p.add_argument("--workers", type=int, default=None, help="signing processes (default auto)")
    p.add_argument("--progress", action="store_true", help="show progress even when piped")

    p = _command(
        sub,
        common,
        "serve",
        "service:cmd_serve",
        "run the HTTP API (with the projections)",
        f"kpi-ledger serve {DEMO} --port 8000\n"
        "kpi-ledger serve --db postgresql://kpi@127.0.0.1:5432/kpi --workers 4",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=count(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument(
        "--checkpoint-seconds",
        type=seconds,
        default=1.0,
        help="sign a checkpoint this often when the log grew (default 1)",
    )
    p.add_argument(
        "--workers",
        type=count(1, 64),
        default=1,
        help="request-serving processes (default 1; more than 1 needs PostgreSQL)",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )

    _command(
        sub,
        common,
        "openapi",
        "service:cmd_openapi",
        "print the API's OpenAPI document",
        "kpi-ledger openapi > docs/openapi.json",
    )

    p = _command(
        sub,
        common,
        "principal",
        "service:cmd_principal",
        "API tokens: add, revoke, list",
        f"kpi-ledger principal add lan.nguyen hoa.tran {DEMO}   # NAME<TAB>TOKEN lines\n"
        f"kpi-ledger principal revoke lan.nguyen {DEMO}",
    )
    p.add_argument("action", choices=["add", "revoke", "list"])
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="principals (people or systems with a key); several: NAME<TAB>TOKEN lines",
    )


# -- running a command -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("db", "home"):
        if not hasattr(args, name):
            setattr(args, name, None)
    module, _, function = args.handler.partition(":")
    try:
        run = getattr(importlib.import_module(f"api.cli.{module}"), function)
        code: int = run(args)
        return code
    except Exception as exc:
        handled = _failure(exc, args)
        if handled is None:
            raise
        return handled


def _failure(exc: Exception, args: argparse.Namespace) -> int | None:
    """The exit status and message for a failure the command line explains (None: a bug,
    shown with its traceback). The exception types are imported only here, after the fact."""
    import json

    from eventsourcing.persistence import PersistenceError

    from domain.errors import Refusal
    from ledger.config import ConfigError, database_url, parse_database
    from signing.bundle import BundleError
    from signing.errors import IntegrityError

    if isinstance(exc, Refusal):
        sys.stderr.write(f"refused: {exc}\n")
        return 1
    if isinstance(exc, PersistenceError):
        where = parse_database(database_url(args.db)).display
        sys.stderr.write(f"kpi-ledger {args.command}: cannot use the database {where}: {exc}\n")
        return 2
    if isinstance(
        exc,
        UsageError
        | ConfigError
        | IntegrityError
        | BundleError
        | OSError  # files: missing, existing, a directory, no permission...
        | UnicodeDecodeError
        | json.JSONDecodeError,
    ):
        sys.stderr.write(f"kpi-ledger {args.command}: {exc}\n")
        return 2
    return None
