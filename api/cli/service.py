"""The service's commands: demo, principal, serve, openapi."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.cli.common import UsageError, database_of, home_of, ledger_database
from domain.service import LedgerService
from ledger.config import DEFAULT_DB, parse_database
from ledger.home import LedgerHome


def cmd_demo(args: argparse.Namespace) -> int:
    """Seed a realistic signed history (api/demo.py)."""
    from api.demo import DemoError, DemoOptions, DemoRefused, print_summary, run_demo

    database = database_of(args)
    home = home_of(args)
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

    service = LedgerService(ledger_database(args))
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

    database = ledger_database(args)
    home = home_of(args)
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
