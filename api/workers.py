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

A worker that exits stops the service: the others are asked to stop (SIGTERM, then uvicorn
finishes the requests in flight) and ``serve`` exits with status 1. SIGINT or SIGTERM to the
supervisor stops everything the same way, with status 0.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType

from api.runtime import Background, Settings

STOP_SECONDS = 30.0


def serve_workers(settings: Settings, *, host: str, port: int, workers: int, log_level: str) -> int:
    """Serve with ``workers`` processes until a signal or a worker's exit; the exit status."""
    family = _family(host, port)
    _check_free(family, host, port)
    worker_settings = _worker_settings(settings)
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in previous:
        signal.signal(sig, stop)
    background = Background(settings)
    children: list[BaseProcess] = []
    status = 0
    try:
        for _ in range(workers):
            process = context.Process(
                target=_worker,
                args=(worker_settings.to_json(), family, host, port, log_level),
                daemon=False,
            )
            process.start()
            children.append(process)
        while not stopping.wait(0.2):
            if any(c.exitcode is not None for c in children):
                sys.stderr.write("kpi-ledger: a worker stopped; stopping the service\n")
                status = 1
                break
    finally:
        for child in children:
            if child.exitcode is None and child.pid is not None:
                child.terminate()  # SIGTERM: uvicorn's graceful shutdown
        for child in children:
            child.join(STOP_SECONDS)
            if child.exitcode is None:
                child.kill()
                child.join()
        background.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _worker_settings(settings: Settings) -> Settings:
    return replace(settings, projections=False, checkpoint_seconds=0)


def _family(host: str, port: int) -> socket.AddressFamily:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}: {exc}") from None
    return infos[0][0]


def _listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _check_free(family: socket.AddressFamily, host: str, port: int) -> None:
    """Fail now, with a clear message, if something else holds the port (a socket bound but
    not listening takes no connections)."""
    try:
        _listener(family, host, port).close()
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _worker(
    settings_json: str, family: socket.AddressFamily, host: str, port: int, log_level: str
) -> None:
    import uvicorn

    from api.app import create_app

    sock = _listener(family, host, port)
    sock.listen(2048)
    config = uvicorn.Config(create_app(Settings.from_json(settings_json)), log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])
