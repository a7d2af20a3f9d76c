"""Where the ledger lives: a database URL turned into ``eventsourcing`` settings.

``sqlite:///path/to/ledger.db`` (the embedded default) or
``postgresql://user[:password]@host[:port]/dbname[?schema=name]`` (production).
The URL comes from ``--db`` or the ``KPI_LEDGER_DB`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DB = "sqlite:///kpi-ledger.db"


class ConfigError(ValueError):
    """The database URL or another setting is unusable."""


@dataclass(frozen=True)
class Database:
    url: str
    backend: str  # "sqlite" or "postgres"
    env: dict[str, str]

    @property
    def display(self) -> str:
        """The URL without its password, for messages."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@")
        return self.url


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("KPI_LEDGER_DB") or DEFAULT_DB


def parse_database(url: str) -> Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc:
            raise ConfigError(f"sqlite URL must be sqlite:///path.db, got {url!r}")
        path = path[1:] if path.startswith("/") and not path.startswith("//") else path
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        if not path:
            raise ConfigError("sqlite URL names no file")
        return Database(
            url,
            "sqlite",
            {
                "PERSISTENCE_MODULE": "ledger.sqlite:SealedSQLiteFactory",
                "SQLITE_DBNAME": path,
                "SQLITE_LOCK_TIMEOUT": "30",
            },
        )
    if parts.scheme in ("postgresql", "postgres"):
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise ConfigError(f"postgresql URL names no database: {url!r}")
        query = parse_qs(parts.query)
        env = {
            "PERSISTENCE_MODULE": "ledger.postgres:SealedPostgresFactory",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_LOCK_TIMEOUT": "30",
            "POSTGRES_CONNECT_TIMEOUT": query.get("connect_timeout", ["10"])[0],
            "POSTGRES_POOL_SIZE": query.get("pool_size", ["4"])[0],
            "POSTGRES_MAX_OVERFLOW": "8",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return Database(url, "postgres", env)
    raise ConfigError(
        f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://user@host/db"
    )
