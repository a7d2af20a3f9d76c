"""Audit: what an inspector needs to prove that nothing was altered.

* ``GET /v1/checkpoint``: the latest signed checkpoint (a C2SP signed note, ``text/plain``);
* ``GET /v1/proofs/inclusion?index=&size=`` and ``/v1/proofs/consistency?first=&second=``:
  RFC 9162 proofs (base64 hashes) against tree sizes the log has;
* ``GET /v1/receipts/{seq}``: the entry's c2sp.org/tlog-proof@v1 receipt under the latest
  checkpoint (404 until a checkpoint seals it: the service signs one every second or so);
* ``GET /v1/entries?start=&limit=``: the log's entries, the exact canonical bytes the bundle
  holds (``entries.jsonl``), one per line;
* ``GET /v1/entries/{seq}``: one entry's bytes, for the principal who signed it too (to
  check a receipt of its own write);
* ``GET /v1/feed?from=SEQ``: the same entries as Server-Sent Events, following the log;
* ``GET /v1/export``: the export bundle as a ``tar.gz``, to verify offline.

Checkpoints, proofs and receipts hold only hashes: any authenticated caller may read them.
The entries, the feed and the bundle name people: administrators and inspectors only.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, PrincipalDep, RuntimeDep
from api.problems import Problem
from ledger.export import export_bundle
from ledger.proof_cache import NotCached
from signing.facts import read_fact
from signing.receipt import TlogProof

router = APIRouter(prefix="/v1", tags=["audit"])
MAX_ENTRIES = 1000
MAX_POSITION = 2**53 - 1  # positions and sizes: what a JSON number and the database hold
Position = Annotated[int, PathParam(ge=0, le=MAX_POSITION, description="a log position")]
FEED_PAGE = 500
FEED_POLL = 0.25  # seconds between looks at the log's size when the feed is at the head
FEED_KEEPALIVE = 15.0
T = TypeVar("T")


class InclusionProof(BaseModel):
    index: int
    size: int
    root: str  # base64
    hashes: list[str]  # base64, leaf to root


class ConsistencyProof(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    hashes: list[str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _size_check(rt: RuntimeDep, size: int, *, cached_only: bool = False) -> None:
    """A 404 problem unless the log has at least ``size`` entries."""
    short = rt.proofs.has(size, cached_only=cached_only)
    if short is not None:
        raise Problem(
            404, "Not found", f"the log has {short} entries, not {size}", rule="log.size_unknown"
        )


async def _memory_first(answer: Callable[[bool], T]) -> T:
    """``answer(cached_only=True)`` on the event loop; if that needs the database, the same
    in a worker thread. A warm proof costs no thread hop and no query."""
    try:
        return answer(True)
    except NotCached:
        return await run_in_threadpool(answer, False)


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    operation_id="get_checkpoint",
    summary="The latest signed checkpoint (C2SP signed note)",
    responses={200: {"content": {"text/plain": {}}}, 404: {"description": "none signed yet"}},
)
def checkpoint(rt: RuntimeDep, _: PrincipalDep) -> PlainTextResponse:
    latest = rt.service.sealed.latest_checkpoint()
    if latest is None:
        raise Problem(
            404, "Not found", "no checkpoint has been signed yet", rule="log.no_checkpoint"
        )
    return PlainTextResponse(latest.note)


@router.get(
    "/proofs/inclusion",
    response_model=InclusionProof,
    operation_id="get_inclusion_proof",
    summary="RFC 9162 inclusion proof of entry `index` in the tree of `size` entries",
)
async def inclusion(
    rt: RuntimeDep,
    _: PrincipalDep,
    index: Annotated[int, Query(ge=0, le=MAX_POSITION)],
    size: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> InclusionProof:
    if index >= size:
        raise Problem(422, "The request is not valid", f"index {index} is not below size {size}")

    def answer(cached_only: bool) -> InclusionProof:
        _size_check(rt, size, cached_only=cached_only)
        root, hashes = rt.proofs.inclusion(index, size, cached_only=cached_only)
        return InclusionProof(
            index=index, size=size, root=_b64(root), hashes=[_b64(h) for h in hashes]
        )

    return await _memory_first(answer)


@router.get(
    "/proofs/consistency",
    response_model=ConsistencyProof,
    operation_id="get_consistency_proof",
    summary="RFC 9162 consistency proof between trees of `first` and `second` entries",
)
async def consistency(
    rt: RuntimeDep,
    _: PrincipalDep,
    first: Annotated[int, Query(ge=1, le=MAX_POSITION)],
    second: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> ConsistencyProof:
    if first > second:
        raise Problem(422, "The request is not valid", f"first {first} is above second {second}")

    def answer(cached_only: bool) -> ConsistencyProof:
        _size_check(rt, second, cached_only=cached_only)
        first_root, second_root, hashes = rt.proofs.consistency(
            first, second, cached_only=cached_only
        )
        return ConsistencyProof(
            first=first,
            second=second,
            first_root=_b64(first_root),
            second_root=_b64(second_root),
            hashes=[_b64(h) for h in hashes],
        )

    return await _memory_first(answer)


@router.get(
    "/receipts/{seq}",
    response_class=PlainTextResponse,
    operation_id="get_receipt",
    summary="The entry's receipt (c2sp.org/tlog-proof@v1) under the latest checkpoint",
    responses={200: {"content": {"text/plain": {}}}, 404: {"description": "not sealed yet"}},
)
def receipt(rt: RuntimeDep, _: PrincipalDep, seq: Position) -> PlainTextResponse:
    log = rt.service.sealed
    latest = log.latest_checkpoint()
    if latest is None or latest.size <= seq:
        size = log.log_size()
        what = "is not in the log" if seq >= size else "is not sealed by a checkpoint yet"
        raise Problem(
            404, "Not found", f"entry {seq} {what}; try again shortly", rule="log.not_sealed"
        )
    _root, proof = rt.proofs.inclusion(seq, latest.size)
    return PlainTextResponse(TlogProof(seq, tuple(proof), latest.note).format())


@router.get(
    "/entries",
    operation_id="get_entries",
    summary="Entries from `start`, the exact canonical bytes, one per line (JSON lines)",
    responses={200: {"content": {"application/jsonl": {}}}},
)
def entries(
    rt: RuntimeDep,
    caller: CallerDep,
    start: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100,
) -> Response:
    _readers_only(caller, "the log's entries")
    size = rt.service.sealed.log_size()
    rows = list(rt.service.sealed.read_rows(start, min(size, start + limit)))
    body = b"".join(bytes(r.entry) + b"\n" for r in rows if r.entry is not None)
    headers = {"X-Log-Size": str(size)}
    if start + len(rows) < size:
        headers["Link"] = f'</v1/entries?start={start + len(rows)}&limit={limit}>; rel="next"'
    return Response(body, media_type="application/jsonl", headers=headers)


@router.get(
    "/entries/{seq}",
    operation_id="get_entry",
    summary="One entry's exact canonical bytes (to check its receipt): its signer's, or readers'",
    responses={200: {"content": {"application/json": {}}}},
)
def entry(rt: RuntimeDep, caller: CallerDep, seq: Position) -> Response:
    """The bytes a receipt's leaf hash is taken over. The principal who signed the entry's
    fact may read it (an integrating system checks the receipts of what it wrote), as may
    administrators and inspectors."""
    row = next(iter(rt.service.sealed.read_rows(seq, seq + 1)), None)
    if row is None or row.entry is None:
        raise Problem(404, "Not found", f"entry {seq} is not in the log", rule="log.size_unknown")
    if not caller.reads_everything:
        found = rt.service.sealed.read_entry(seq)
        signer = read_fact(found.envelope, strict=False).actor if found is not None else None
        if signer != caller.principal:
            raise Problem(
                403,
                "Forbidden",
                "an entry is read by the principal who signed it, administrators and inspectors",
                rule="auth.forbidden",
            )
    return Response(bytes(row.entry), media_type="application/json")


@router.get(
    "/feed",
    operation_id="get_feed",
    summary="Server-Sent Events: every entry from `from` on, then new ones as they are sealed",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def feed(
    request: Request,
    rt: RuntimeDep,
    caller: CallerDep,
    start: Annotated[int, Query(ge=0, le=MAX_POSITION, alias="from")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,15}$")] = None,
) -> StreamingResponse:
    """Each event is ``id: <seq>``, ``event: entry``, ``data: <the entry's canonical bytes>``;
    a reconnecting client's ``Last-Event-ID`` resumes after that entry. ``limit`` ends the
    stream after that many entries (otherwise it follows the log, with a comment every 15 s
    to keep the connection open). For administrators and inspectors."""
    _readers_only(caller, "the feed of entries")
    first = int(last_event_id) + 1 if last_event_id is not None else start
    log = rt.service.sealed

    def rows(at: int) -> list[Any]:
        size = log.log_size()
        return list(log.read_rows(at, min(size, at + FEED_PAGE))) if at < size else []

    async def events() -> AsyncIterator[bytes]:
        at, sent, idle = first, 0, 0.0
        while not await request.is_disconnected():
            page = await run_in_threadpool(rows, at)
            for row in page:
                yield b"id: %d\nevent: entry\ndata: %s\n\n" % (row.seq, bytes(row.entry))
                at, sent = row.seq + 1, sent + 1
                if limit is not None and sent >= limit:
                    return
            if page:
                idle = 0.0
                continue
            await asyncio.sleep(FEED_POLL)
            idle += FEED_POLL
            if idle >= FEED_KEEPALIVE:
                idle = 0.0
                yield b": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get(
    "/export",
    operation_id="get_export",
    summary="The export bundle (tar.gz: log.vkey, checkpoints/, entries.jsonl) for offline checks",
    responses={200: {"content": {"application/gzip": {}}}},
)
def export(rt: RuntimeDep, caller: CallerDep) -> FileResponse:
    """What ``kpi-ledger export`` writes, as one file: verify it with ``kpi-ledger verify
    BUNDLE --log-key log.vkey``. For administrators and inspectors."""
    _readers_only(caller, "the export bundle")
    folder = Path(tempfile.mkdtemp(prefix="kpi-export-"))
    target = folder / "kpi-ledger-bundle.tar.gz"
    try:
        export_bundle(rt.service.sealed, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        target,
        media_type="application/gzip",
        filename=target.name,
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


def _readers_only(caller: Any, what: str) -> None:
    if not caller.reads_everything:
        raise Problem(
            403, "Forbidden", f"{what} is for administrators and inspectors", rule="auth.forbidden"
        )
