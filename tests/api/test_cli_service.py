"""``kpi-ledger principal`` (the API's tokens) and ``kpi-ledger openapi``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.principals import Principals, token_hash
from domain.service import LedgerService
from ledger.config import parse_database
from tests.api.test_cli_projections import run
from tests.domain.world import LAN, World


def stored(url: str) -> dict[str, tuple[str, str | None]]:
    """name -> (token hash, revoked_at), read straight from the table."""
    service = LedgerService(parse_database(url))
    try:
        principals = Principals(service.sealed.datastore)  # type: ignore[attr-defined]
        with principals._cursor(commit=False) as c:
            c.execute(f"SELECT name, token_hash, revoked_at FROM {principals.table}")
            return {r["name"]: (r["token_hash"], r["revoked_at"]) for r in c.fetchall()}
    finally:
        service.close()


def test_tokens_are_issued_to_principals_with_a_key(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    w = World(sqlite_url)
    w.organise()
    w.employ(LAN)
    w.service.close()
    code, out, err = run(capsys, "principal", "add", LAN, "--db", sqlite_url)
    assert code == 0 and "shown once" in err
    token = out.strip()
    assert token.startswith("kpi_") and stored(sqlite_url)[LAN] == (token_hash(token), None)
    code, out, _ = run(capsys, "principal", "add", "tuan.sup", "hoa.hr", "--db", sqlite_url)
    lines = dict(line.split("\t") for line in out.splitlines())
    assert code == 0 and set(lines) == {"tuan.sup", "hoa.hr"}
    # a name without a key in the log gets nothing, and neither do the others of its command
    before = stored(sqlite_url)
    code, _, err = run(capsys, "principal", "add", "minh.hr", "nobody", "--db", sqlite_url)
    assert code == 2 and "'nobody' has no key in force" in err
    assert stored(sqlite_url) == before
    code, out, _ = run(capsys, "principal", "list", "--db", sqlite_url)
    assert [line.split("\t")[0] for line in out.splitlines()] == ["hoa.hr", LAN, "tuan.sup"]
    assert all(line.endswith("active") for line in out.splitlines())
    code, out, _ = run(capsys, "principal", "revoke", LAN, "--db", sqlite_url)
    assert code == 0 and stored(sqlite_url)[LAN][1] is not None
    code, _, err = run(capsys, "principal", "revoke", LAN, "--db", sqlite_url)
    assert code == 2 and "no token in force" in err
    code, _, err = run(capsys, "principal", "add", "--db", sqlite_url)
    assert code == 2 and "needs a NAME" in err


def test_openapi_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "openapi")
    assert code == 0 and json.loads(out)["info"]["title"] == "kpi-ledger"


def test_principal_refuses_a_missing_ledger(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "principal", "list", "--db", f"sqlite:///{tmp_path}/none.db")
    assert code == 2 and "no ledger at" in err


def test_a_running_service_remembers_tokens_for_seconds_only(sqlite_url: str) -> None:
    w = World(sqlite_url)
    w.organise()
    w.employ(LAN)
    try:
        datastore = w.service.sealed.datastore  # type: ignore[attr-defined]
        serving = Principals(datastore, remember=60)
        operator = Principals(datastore)  # `kpi-ledger principal` in another process
        token = operator.issue(LAN)
        assert serving.remembered(token) is None  # never looked up: ask the table
        assert serving.who(token) == LAN and serving.remembered(token) == LAN
        assert operator.revoke(LAN)
        # the documented lag: revoked elsewhere, still accepted until the memory expires
        assert serving.who(token) == LAN
        assert Principals(datastore).who(token) is None  # a fresh look refuses it at once
        # a revoke through the serving process's own Principals forgets at once
        token = serving.issue(LAN)
        assert serving.who(token) == LAN
        assert serving.revoke(LAN) and serving.who(token) is None
        assert serving.remembered(token) is None
    finally:
        w.service.close()


def test_settings_travel_to_a_worker_process_unchanged(sqlite_url: str, tmp_path: Path) -> None:
    from api.runtime import Settings
    from ledger.home import LedgerHome

    settings = Settings(
        parse_database(sqlite_url),
        LedgerHome(tmp_path / "home"),
        checkpoint_seconds=0,
        max_body=1000,
        projections=False,
        token_seconds=0.5,
        quiet_gc=True,
    )
    assert Settings.from_json(settings.to_json()) == settings


def test_workers_need_postgresql(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    World(sqlite_url).service.close()
    code, _, err = run(capsys, "serve", "--db", sqlite_url, "--workers", "2")
    assert code == 2 and "--workers needs PostgreSQL" in err
