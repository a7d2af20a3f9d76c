"""A real PostgreSQL server for the test session, and fresh databases on it.

How the server is chosen (first match wins, once per process):

1. ``KPI_LEDGER_TEST_PG`` is set: that libpq URL is used as-is.  It must name a
   server and a role allowed to ``CREATE DATABASE``.  If it does not answer,
   that is an error.
2. A server answers at the probe address (``127.0.0.1:5432`` unless
   ``KPI_LEDGER_TEST_PG_PROBE=host:port`` says otherwise) for user ``postgres``,
   database ``postgres``: ``postgresql://postgres@HOST:PORT/postgres`` is used.
3. Otherwise a throwaway cluster is created with the local ``initdb``/``pg_ctl``
   (searched on PATH, in ``pg_config --bindir`` and in
   ``/usr/lib/postgresql/*/bin``, newest first) in a fresh temporary directory,
   on a free 127.0.0.1 port, with trust auth and ``fsync=off``.  PostgreSQL
   refuses to run as root, so when we are root it runs as the system user
   ``kpiledger-test`` (created if missing).  It is stopped and its directory
   deleted at session teardown / interpreter exit; clusters left behind by a
   killed process are reaped by the next one that starts a cluster.

If none of these works, :class:`PostgresUnavailable` is raised: the PostgreSQL
tests error out, they are never skipped.

Under pytest-xdist every worker is its own process and makes this choice on its
own, so with no server answering each worker runs its own cluster.  Database
names carry 64 random bits, so they are unique across workers and servers.

This module is imported by bare name (``import pg``): ``tests/`` is not a
package, and pytest puts it on ``sys.path`` for ``tests/conftest.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import glob
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

ENV_DSN = "KPI_LEDGER_TEST_PG"
ENV_PROBE = "KPI_LEDGER_TEST_PG_PROBE"
DEFAULT_PROBE = "127.0.0.1:5432"
TEST_OS_USER = "kpiledger-test"
DB_PREFIX = "kpi_test_"
CLUSTER_DIR_PREFIX = "kpi-ledger-pg-"

PROBE_TIMEOUT_S = 3
ADMIN_TIMEOUT_S = 10
START_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started for the tests."""


# --------------------------------------------------------------------------- #
# Choosing the server
# --------------------------------------------------------------------------- #

_lock = threading.Lock()
_dsn: str | None = None
_cluster: Cluster | None = None


def server_dsn() -> str:
    """libpq URL of a server on which the tests may create databases.

    Chosen once per process (see the module docstring) and cached.
    """
    global _dsn, _cluster
    with _lock:
        if _dsn is not None:
            return _dsn
        explicit = os.environ.get(ENV_DSN, "").strip()
        if explicit:
            error = _probe(explicit)
            if error is not None:
                raise PostgresUnavailable(
                    f"{ENV_DSN} is set but its server does not answer: {error}"
                )
            _dsn = explicit
            return _dsn
        host, port = _probe_address()
        local = f"postgresql://postgres@{_url_host(host)}:{port}/postgres"
        probe_error = _probe(local)
        if probe_error is None:
            _dsn = local
            return _dsn
        try:
            _cluster = Cluster.start()
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(
                f"No PostgreSQL for the tests: nothing answers at {host}:{port} "
                f"({probe_error}), and no throwaway cluster could be started: {exc}\n"
                f"Install PostgreSQL (Debian: apt-get install postgresql) or set "
                f"{ENV_DSN}=postgresql://USER@HOST:PORT/DBNAME."
            ) from exc
        atexit.register(shutdown)
        _dsn = _cluster.dsn
        return _dsn


def started_cluster() -> Cluster | None:
    """The throwaway cluster this process started, if it started one."""
    return _cluster


def shutdown() -> None:
    """Stop the throwaway cluster, if any. Idempotent; also runs at exit."""
    global _dsn, _cluster
    with _lock:
        cluster, _cluster = _cluster, None
        if cluster is not None:
            _dsn = None
            cluster.stop()


def _probe_address() -> tuple[str, int]:
    raw = os.environ.get(ENV_PROBE, "").strip() or DEFAULT_PROBE
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PostgresUnavailable(f"{ENV_PROBE} must be HOST:PORT, got {raw!r}")
    return host.strip("[]"), int(port)


def _probe(dsn: str) -> str | None:
    """None if a session can be opened on ``dsn``, else why not."""
    try:
        with psycopg.connect(dsn, connect_timeout=PROBE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


# --------------------------------------------------------------------------- #
# Fresh databases
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def fresh_database(server: str | None = None) -> Iterator[str]:
    """Create a new empty database, yield its libpq URL, then drop it.

    The database is ``kpi_test_<16 hex digits>``, made from ``template0`` (so
    nothing added to ``template1`` leaks in) with UTF8 encoding and the C
    collation, on ``server`` or else on :func:`server_dsn`.  It is dropped
    ``WITH (FORCE)``, so connections the test left open do not block it.
    """
    admin = server if server is not None else server_dsn()
    name = DB_PREFIX + secrets.token_hex(8)
    with _admin_connection(admin) as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            ).format(sql.Identifier(name))
        )
    try:
        yield with_dbname(admin, name)
    finally:
        with _admin_connection(admin) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _admin_connection(dsn: str) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=ADMIN_TIMEOUT_S)


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` (URL or key=value form) as a ``postgresql://`` URL naming ``dbname``."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = params.pop("user", None)
    password = params.pop("password", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    params.pop("dbname", None)
    auth = ""
    if user is not None:
        auth = quote(str(user), safe="")
        if password is not None:
            auth += ":" + quote(str(password), safe="")
        auth += "@"
    netloc = auth + (_url_host(str(host)) if host is not None else "")
    if port is not None:
        netloc += f":{port}"
    query = urlencode({k: str(v) for k, v in params.items()})
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def _url_host(host: str) -> str:
    if host.startswith("/"):  # a socket directory
        return quote(host, safe="")
    if ":" in host:  # IPv6 literal
        return f"[{host}]"
    return host


# --------------------------------------------------------------------------- #
# Throwaway cluster
# --------------------------------------------------------------------------- #


@dataclasses.dataclass
class Cluster:
    """A private PostgreSQL cluster in a temporary directory."""

    root: Path
    bindir: Path
    port: int
    run_as: str | None  # OS user the server runs as, when we are root

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> Cluster:
        """initdb + pg_ctl start on a free port; raises PostgresUnavailable."""
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "no initdb/pg_ctl found on PATH, in `pg_config --bindir` or in "
                "/usr/lib/postgresql/*/bin"
            )
        run_as: str | None = None
        if os.geteuid() == 0:
            run_as = TEST_OS_USER
            _ensure_os_user(run_as)
        base = _base_tmpdir(world_traversable=run_as is not None)
        _reap_orphans(base)
        root = Path(tempfile.mkdtemp(prefix=CLUSTER_DIR_PREFIX, dir=base))
        (root / "owner.pid").write_text(f"{os.getpid()}\n")
        (root / "bindir").write_text(f"{bindir}\n")
        (root / "sock").mkdir()
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for path in (root, root / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        cluster = cls(root=root, bindir=bindir, port=0, run_as=run_as)
        try:
            cluster._initdb()
            cluster._start_server()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _initdb(self) -> None:
        self._run(
            "initdb",
            [
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )

    def _start_server(self) -> None:
        errors: list[str] = []
        for _ in range(START_ATTEMPTS):  # another process may grab the port first
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl",
                    [
                        "start",
                        "-w",
                        "-t",
                        "120",
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.root / "server.log"),
                        "-o",
                        options,
                    ],
                )
            except PostgresUnavailable as exc:
                errors.append(f"{exc}\n{self._log_tail()}")
                continue
            if _probe(self.dsn) is None:
                return
            errors.append(f"started on port {self.port} but does not answer\n{self._log_tail()}")
            self._stop_server()
        raise PostgresUnavailable("pg_ctl start failed:\n" + "\n".join(errors))

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete the directory."""
        self._stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_server(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable):
                self._run("pg_ctl", ["stop", "-D", str(self.datadir), "-m", "immediate", "-w"])

    def _run(self, tool: str, args: Sequence[str]) -> None:
        _run_pg_tool(self.bindir / tool, args, run_as=self.run_as, cwd=self.root)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _run_pg_tool(exe: Path, args: Sequence[str], *, run_as: str | None, cwd: Path) -> None:
    cmd = [str(exe), *args]
    if run_as is not None:
        runuser = shutil.which("runuser")
        if runuser is not None:
            cmd = [runuser, "-u", run_as, "--", *cmd]
        else:
            cmd = ["su", "-s", "/bin/sh", run_as, "-c", "exec " + shlex.join(cmd)]
    # Our PG* variables must not steer the tools; the C locale always exists.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresUnavailable(f"`{shlex.join(cmd)}` timed out after {exc.timeout}s") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise PostgresUnavailable(f"`{shlex.join(cmd)}` exited {proc.returncode}: {output}")


def find_bindir() -> Path | None:
    """A directory holding both initdb and pg_ctl, or None."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(debian, key=_version_key, reverse=True)]
    for cand in candidates:
        if all(os.access(cand / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return cand
    return None


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _base_tmpdir(*, world_traversable: bool) -> Path:
    """Where cluster directories go: the temp dir, or /tmp if that one won't do.

    The socket path must stay short (the kernel caps it near 107 bytes), and
    when the server runs as another user it must be able to reach the dir.
    """
    base = Path(tempfile.gettempdir()).resolve()
    ok = len(str(base)) <= 60 and " " not in str(base)  # it goes into pg_ctl -o
    if ok and world_traversable:
        ok = all(p.stat().st_mode & 0o001 for p in (base, *base.parents))
    return base if ok else Path("/tmp")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure_os_user(name: str) -> None:
    """Create the unprivileged system user the server runs as, if missing."""
    # xdist workers may race here; useradd itself fails on a concurrent lock.
    with _file_lock(Path("/tmp") / "kpi-ledger-test-useradd.lock"):
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        cmd = [useradd, "--system", "--no-create-home"]
        if os.path.exists("/usr/sbin/nologin"):
            cmd += ["--shell", "/usr/sbin/nologin"]
        try:
            grp.getgrnam(name)
            cmd += ["--gid", name]
        except KeyError:
            cmd += ["--user-group"]
        proc = subprocess.run([*cmd, name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"PostgreSQL refuses to run as root, and creating user {name!r} failed: "
                f"{(proc.stdout + proc.stderr).strip()}"
            )


def _reap_orphans(base: Path) -> None:
    """Stop and delete clusters whose owning process is gone (e.g. SIGKILLed)."""
    for root in base.glob(CLUSTER_DIR_PREFIX + "*"):
        try:
            owner = int((root / "owner.pid").read_text().strip())
            bindir = Path((root / "bindir").read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        run_as: str | None = None
        if os.geteuid() == 0:
            try:
                run_as = root.owner()
            except (KeyError, OSError):
                continue
            run_as = None if run_as == "root" else run_as
        orphan = Cluster(root=root, bindir=bindir, port=0, run_as=run_as)
        orphan.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
