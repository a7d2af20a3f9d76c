"""Helpers for tests that need a real HTTP server and a real socket: the application under
uvicorn in a thread of the test process (so that a test can reach into its runtime), a raw
HTTP/1.1 connection whose reuse a test can see, and a Server-Sent Events parser."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI


@contextmanager
def served(app: FastAPI) -> Iterator[tuple[str, int]]:
    """``app`` under uvicorn (httptools, as ``kpi-ledger serve``) in a thread; yields
    (host, port) once it has started, and stops it on leaving."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=2, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield host, port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One HTTP/1.1 connection: requests are sent on it one after the other, and an answer
    that arrives on another connection cannot pass for one on this."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        chunks: Iterable[bytes] | None = None,
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        payload = b""
        if chunks is not None:
            lines.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
        elif body is not None:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        chunks: Iterable[bytes] | None = None,
    ) -> Answer:
        self.send(method, path, headers, body, chunks=chunks)
        return self.answer()

    def answer(self) -> Answer:
        """The next whole answer (a ``Content-Length`` or chunked body)."""
        head = self._until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return Answer(status, headers, self._exactly(int(headers["content-length"])))
        body = b"".join(self.chunks())
        return Answer(status, headers, body)

    def head(self) -> tuple[int, dict[str, str]]:
        """The status and headers of a streamed answer (read its body with ``chunks``)."""
        head = self._until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ", 2)[1]), headers

    def body(self, headers: dict[str, str]) -> bytes:
        """The body of an answer whose head ``head`` has read."""
        if "content-length" in headers:
            return self._exactly(int(headers["content-length"]))
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """A chunked body's chunks, up to its last one."""
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")
                return
            chunk = self._exactly(size)
            self._exactly(2)
            yield chunk

    def closed_by_server(self) -> bool:
        """Whether the server has closed the connection (reads its end, waiting a little)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _until(self, mark: bytes) -> bytes:
        while mark not in self.buffer:
            self._fill()
        found, self.buffer = self.buffer.split(mark, 1)
        return found

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        found, self.buffer = self.buffer[:n], self.buffer[n:]
        return found


@dataclass(frozen=True)
class Event:
    id: int | None
    event: str
    data: bytes


def parse_events(text: bytes) -> tuple[list[Event], bytes]:
    """The complete events in ``text`` (comments dropped), and the incomplete rest."""
    *blocks, rest = text.split(b"\n\n")
    events = []
    for block in blocks:
        fields: dict[bytes, bytes] = {}
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            name, _, value = line.partition(b": ")
            fields[name] = value
        if fields:
            raw_id = fields.get(b"id")
            events.append(
                Event(
                    int(raw_id) if raw_id is not None else None,
                    fields.get(b"event", b"message").decode(),
                    fields.get(b"data", b""),
                )
            )
    return events, rest
