"""``kpi-ledger serve --workers N``: N request-serving processes on one port.

Each worker is a process of its own (spawned: it imports the application afresh) running
uvicorn on its own listening socket, bound to the same address with ``SO_REUSEPORT``, so that
the kernel spreads the incoming connections over the workers. (uvicorn's own ``--workers``
shares one socket, and whichever worker wakes first accepts: with 16 clients connecting at
once the bench saw 14 connections on one worker and 2 on the other, and the loaded worker's
latency was six times the other's.) The supervising process runs the projection runner and
the checkpointer (``api.runtime.Background``), one of each for all workers; the workers run
neither. They write through the ledger's PostgreSQL writer lock, each grouping its own
concurrent writes (``api/writer.py``).

Starting: the supervisor first refuses a port on which anything listens (``_check_free``:
a probe bound *without* ``SO_REUSEPORT`` cannot share the port with a listening socket, while
one with it would silently join the socket group of another service of the same user, or of
workers left behind by a dead supervisor). Then it creates, binds and listens all N sockets
itself, before any worker starts, and hands each to its worker: from the first moment a
connection is accepted on the port, every socket of the group listens, and a connection the
kernel gives to a worker still starting waits in that socket's queue instead of being
refused. It also creates the tables a worker's runtime would create if missing
(``_create_tables``), so that workers starting together do not race to create them. Each
worker tells the supervisor over its pipe once uvicorn serves; when all have, the supervisor
writes ``kpi-ledger: ready: N workers serving on http://HOST:PORT/v1`` to its stderr
(``READY_LINE``): readiness means every worker serves.

Stopping: a worker that exits stops the service: the others are asked to stop (SIGTERM, then
uvicorn finishes the requests in flight, for up to ``STOP_SECONDS``) and ``serve`` exits
with status 1; so does a background job that gives up for good (``Background.failed``).
SIGINT or SIGTERM to the supervisor stops everything the same way, with status 0. A worker
never outlives its supervisor: on Linux the kernel sends it SIGTERM when the
supervisor dies (``PR_SET_PDEATHSIG``), and everywhere a thread of the worker waits on the
pipe the supervisor holds open, whose end of file (the supervisor's death closes it, however
it died and whichever of its threads spawned the worker) makes the worker shut down
gracefully for at most ``ORPHAN_SECONDS``, then exit. So ``kill -9`` of the supervisor does
not leave workers taking writes with no runner and no checkpointer, on a port where a
restarted service would start beside them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from api.principals import Principals
from api.runtime import STOP_GRACE, Background, Settings
from ledger.config import Database
from projections.runners import close_view, open_view
from projections.store import PostgresEvaluationView

STOP_SECONDS = 30.0  # a worker asked to stop finishes its requests in flight for this long
ORPHAN_SECONDS = 5.0  # a worker whose supervisor vanished shuts down for at most this long
BACKLOG = 2048  # each listening socket's queue of connections not yet accepted
READY_LINE = "kpi-ledger: ready:"  # what the supervisor writes once every worker serves
SERVING = b"serving"  # what a worker sends over its pipe once uvicorn serves
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def serve_workers(settings: Settings, *, host: str, port: int, workers: int, log_level: str) -> int:
    """Serve with ``workers`` processes until a signal or a worker's exit; the exit status."""
    family = _family(host, port)
    _check_free(family, host, port)
    worker_json = _worker_settings(settings).to_json()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in previous:
        signal.signal(sig, stop)
    listeners: list[socket.socket] = []
    children: list[tuple[BaseProcess, Connection]] = []
    background: Background | None = None
    try:
        # every socket listens before any worker starts (see the module's docstring)
        listeners = [_listener(family, host, port) for _ in range(workers)]
        _create_tables(settings.database)  # before the runner's thread, before the workers
        background = Background(settings)
        for sock in listeners:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(worker_json, sock, theirs, os.getpid(), log_level),
                daemon=False,
            )
            process.start()  # the worker holds its own copies of the socket and the pipe
            children.append((process, ours))
            theirs.close()
            sock.close()
        return _supervise(children, background, stopping, f"http://{host}:{port}/v1")
    finally:
        for sock in listeners:
            sock.close()
        for child, _ in children:
            if child.exitcode is None and child.pid is not None:
                child.terminate()  # SIGTERM: uvicorn's graceful shutdown
        for child, _ in children:
            child.join(STOP_SECONDS)
            if child.exitcode is None:
                child.kill()
                child.join()
        for _, pipe in children:
            pipe.close()  # only now: its end of file would stop the worker
        if background is not None:
            background.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _create_tables(database: Database) -> None:
    """Create, before anything else runs on the database, the tables each worker's runtime
    creates if they are missing: the views' and the token table (the ledger's own exist: the
    ledger was initialised). PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` is not safe against
    a concurrent one: of two workers starting at once on a ledger without a token table (no
    ``principal add`` yet), one failed with a unique violation on ``pg_type``
    (``kpi_api_principals``) and the service stopped, while the other had already answered.
    That was the end-to-end test's flake: its readiness probe was answered by the worker
    that had started, and its first write refused once the service had stopped. (The views'
    tables race the same way with the supervisor's own runner, in its thread.)"""
    view = open_view(database)
    try:
        assert isinstance(view, PostgresEvaluationView)  # workers: PostgreSQL only
        Principals(view.datastore)
    finally:
        close_view(view)


def _supervise(
    children: list[tuple[BaseProcess, Connection]],
    background: Background,
    stopping: threading.Event,
    url: str,
) -> int:
    """Announce readiness once every worker serves; 1 when a worker stops or a background job
    gives up for good, 0 on a signal."""
    pipes = [pipe for _, pipe in children]
    starting = set(pipes)
    while not stopping.is_set():
        if any(process.exitcode is not None for process, _ in children):
            return _worker_stopped()
        if background.failed:
            sys.stderr.write("kpi-ledger: a background job failed; stopping the service\n")
            sys.stderr.flush()
            return 1
        for pipe in wait(pipes, timeout=0.2):
            assert isinstance(pipe, Connection)
            try:
                pipe.recv_bytes()  # SERVING; a worker sends nothing else
            except (EOFError, OSError):  # its end closed: the worker is gone
                return _worker_stopped()
            starting.discard(pipe)
            if not starting:
                sys.stderr.write(f"{READY_LINE} {len(children)} workers serving on {url}\n")
                sys.stderr.flush()
    return 0


def _worker_stopped() -> int:
    sys.stderr.write("kpi-ledger: a worker stopped; stopping the service\n")
    sys.stderr.flush()
    return 1


def _worker_settings(settings: Settings) -> Settings:
    return replace(settings, projections=False, checkpoint_seconds=0, jobs_elsewhere=True)


def _family(host: str, port: int) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}: {exc}") from None
    return infos[0][0]


def _listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A socket of the port's group: bound with ``SO_REUSEPORT`` and listening."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _check_free(family: socket.AddressFamily, host: str, port: int) -> None:
    """Fail now, with a clear message, if anything listens on the port.

    The probe is bound without ``SO_REUSEPORT``, so the kernel refuses it beside a listening
    socket even when that one has ``SO_REUSEPORT`` (our own sockets would be let in: a second
    service, or workers orphaned by a killed supervisor, would share the port with the first).
    ``SO_REUSEADDR`` lets it past connections of an earlier service left in TIME_WAIT, and past
    a socket bound but not listening, which takes no connections."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"cannot listen on {host}:{port}: another process is listening on it (a service"
                " already running, or the workers of one?)"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()


class _WorkerServer(uvicorn.Server):
    """uvicorn in a worker: tells the supervisor once it serves (``startup``), and stops when
    the supervisor's end of the pipe closes (``watch``, in a thread of its own)."""

    def __init__(self, config: uvicorn.Config, supervisor: Connection) -> None:
        super().__init__(config)
        self.supervisor = supervisor

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan (the runtime opens), then serving
        with contextlib.suppress(OSError):  # the supervisor is gone: ``watch`` sees to it
            self.supervisor.send_bytes(SERVING)

    def watch(self) -> None:
        """Wait for the supervisor's end of the pipe to close, then stop: gracefully, as on
        SIGTERM (no new connection, the requests in flight answered), and exit after
        ``ORPHAN_SECONDS`` if that has not finished by then."""
        with contextlib.suppress(EOFError, OSError):
            self.supervisor.recv_bytes()  # the supervisor never writes: this returns at EOF
        self.should_exit = True  # seen by uvicorn's main loop on its next tick
        time.sleep(ORPHAN_SECONDS)
        os._exit(1)  # the graceful shutdown did not end in time


def _die_with_supervisor(supervisor_pid: int) -> None:
    """On Linux, ask the kernel for SIGTERM when the supervisor dies; then make sure it has not
    died already (before the request: this process would then have another parent)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"prctl(PR_SET_PDEATHSIG): {os.strerror(code)}")
    if os.getppid() != supervisor_pid:
        raise SystemExit("kpi-ledger: the supervisor of this worker is gone")


def _worker(
    settings_json: str,
    sock: socket.socket,
    supervisor: Connection,
    supervisor_pid: int,
    log_level: str,
) -> None:
    _die_with_supervisor(supervisor_pid)
    from api.app import create_app

    config = uvicorn.Config(
        create_app(Settings.from_json(settings_json)),
        log_level=log_level,
        timeout_graceful_shutdown=STOP_GRACE,
    )
    server = _WorkerServer(config, supervisor)
    threading.Thread(target=server.watch, name="supervisor-watch", daemon=True).start()
    server.run(sockets=[sock])
