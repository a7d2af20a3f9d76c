"""The PostgreSQL test harness itself (tests/pg.py and the database fixtures)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

USER_OBJECTS = """
    SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg_toast%'
      AND n.nspname NOT LIKE 'pg_temp%'
"""


def _dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def _database_exists(server: str, name: str) -> bool:
    with psycopg.connect(server) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_server_answers(pg_server: str) -> None:
    with psycopg.connect(pg_server) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    assert row[0] >= 130000  # DROP DATABASE ... WITH (FORCE) needs 13+
    cluster = pg.started_cluster()
    if cluster is not None:  # nothing answered at the probe address: our own cluster
        assert pg_server == cluster.dsn


def test_fresh_database_is_empty_and_named(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    name = _dbname(pg_url)
    assert name.startswith(pg.DB_PREFIX)
    with psycopg.connect(pg_url) as conn:
        current = conn.execute("SELECT current_database()").fetchone()
        objects = conn.execute(USER_OBJECTS).fetchone()
        encoding = conn.execute("SHOW server_encoding").fetchone()
    assert current == (name,)
    assert objects == (0,)
    assert encoding == ("UTF8",)


def test_fresh_databases_are_distinct_and_dropped(pg_server: str, pg_url: str) -> None:
    with pg.fresh_database(pg_server) as first, pg.fresh_database(pg_server) as second:
        names = {_dbname(pg_url), _dbname(first), _dbname(second)}
        assert len(names) == 3
        with psycopg.connect(first) as conn:  # left open on purpose: FORCE must cope
            conn.execute("CREATE TABLE leftover (x int)")
            conn.commit()
            with pg.fresh_database(pg_server) as third:
                pass
            assert not _database_exists(pg_server, _dbname(third))
            assert _database_exists(pg_server, _dbname(first))
    assert not _database_exists(pg_server, _dbname(first))
    assert not _database_exists(pg_server, _dbname(second))


def test_pg_url_is_dropped_after_the_test(pg_server: str) -> None:
    # Drive the fixture's own context manager, as pytest would.
    with pg.fresh_database(pg_server) as url:
        assert _database_exists(pg_server, _dbname(url))
    assert not _database_exists(pg_server, _dbname(url))


def test_sqlite_url(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path}/ledger.db"


def test_db_url_runs_on_both_backends(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["db_url"]
    expected = {"sqlite": "sqlite:///", "postgres": "postgresql://"}[backend]
    assert db_url.startswith(expected)


def test_with_dbname_builds_urls() -> None:
    assert pg.with_dbname("postgresql://postgres@127.0.0.1:5432/postgres", "x") == (
        "postgresql://postgres@127.0.0.1:5432/x"
    )
    assert pg.with_dbname("host=/run/pg port=5433 user=u password=p@ss dbname=d", "x") == (
        "postgresql://u:p%40ss@%2Frun%2Fpg:5433/x"
    )
    assert pg.with_dbname("postgresql://u@h/d?sslmode=disable", "x") == (
        "postgresql://u@h/x?sslmode=disable"
    )


def test_no_server_and_no_binaries_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "_dsn", None)  # forget this process's choice for a moment
    monkeypatch.setattr(pg, "_cluster", None)
    monkeypatch.delenv(pg.ENV_DSN, raising=False)
    monkeypatch.setenv(pg.ENV_PROBE, "127.0.0.1:1")
    monkeypatch.setattr(pg, "find_bindir", lambda: None)
    with pytest.raises(pg.PostgresUnavailable, match="No PostgreSQL for the tests"):
        pg.server_dsn()


def test_unreachable_explicit_server_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "_dsn", None)
    monkeypatch.setattr(pg, "_cluster", None)
    monkeypatch.setenv(pg.ENV_DSN, "postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(pg.PostgresUnavailable, match=pg.ENV_DSN):
        pg.server_dsn()


@pytest.mark.postgres
def test_throwaway_cluster_starts_and_is_removed() -> None:
    """The fallback used when no server answers, exercised on every run."""
    if pg.find_bindir() is None and os.environ.get(pg.ENV_DSN):
        pytest.skip(f"no local PostgreSQL binaries; {pg.ENV_DSN} names the server")
    cluster = pg.Cluster.start()
    try:
        with psycopg.connect(cluster.dsn) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row == (str(cluster.datadir),)
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        uid = Path(f"/proc/{postmaster}").stat().st_uid
        if os.geteuid() == 0:  # PostgreSQL refuses root: it must run as the test user
            assert cluster.run_as == pg.TEST_OS_USER
            assert uid == pwd.getpwnam(pg.TEST_OS_USER).pw_uid != 0
        else:
            assert uid == os.geteuid()
        with pg.fresh_database(cluster.dsn) as url:
            assert _dbname(url).startswith(pg.DB_PREFIX)
    finally:
        cluster.stop()
    assert not cluster.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn, connect_timeout=3)
