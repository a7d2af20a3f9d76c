"""Shared pytest fixtures.

Sections (add new fixtures to the section they belong to, or start a new one):

* Databases: ``pg_server``, ``pg_url``, ``sqlite_url``, ``db_url``.

``tests/`` is not a package: helper modules next to this file (such as
``pg.py``) are imported by bare name, because pytest puts this directory on
``sys.path``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pg
import pytest

# --------------------------------------------------------------------------- #
# Databases
#
# Every test that takes ``db_url`` runs twice, once per backend the product
# supports. PostgreSQL is real (see tests/pg.py for how the server is chosen);
# if none can be found or started, those tests ERROR, they are never skipped.
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """libpq URL of the session's PostgreSQL server (may CREATE DATABASE)."""
    yield pg.server_dsn()
    pg.shutdown()  # stops a throwaway cluster, if this process started one


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """``postgresql://user@host:port/kpi_test_<hex>``: a new empty database, dropped after."""
    with pg.fresh_database(pg_server) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """``sqlite:///<tmp_path>/ledger.db`` (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once for SQLite and once for PostgreSQL."""
    # Looked up lazily, so the sqlite run never touches PostgreSQL.
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL through a fixture ``postgres``."""
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
