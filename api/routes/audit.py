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
* ``GET /v1/feed?from=SEQ``: the same entries as Server-Sent Events, following the log (one
  reader of the log per process, fanned out to the subscribers: ``api/feed.py``);
* ``GET /v1/export``: the export bundle as a ``tar.gz``, to verify offline.

A damaged position (its event row gone, its bytes no longer hashing to the leaf hash sealed
for it, or missing below the log's size) is shown in its place, never skipped: a
``{"damaged": {"seq", "problem", "detail"}}`` line among the entries (and its position in
``X-Log-Damaged``), an ``event: damaged`` in the feed, a 409 ``log.damaged`` for one entry.

Checkpoints, proofs and receipts hold only hashes: any authenticated caller may read them.
The entries, the feed and the bundle name people: administrators and inspectors only.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.deps import CallerDep, PrincipalDep, RuntimeDep
from api.feed import Damage, FeedFull, FeedHub, FeedResponse, read_shown
from api.problems import Problem
from ledger.export import export_bundle
from ledger.proof_cache import NotCached
from signing.errors import ProofError
from signing.facts import read_fact
from signing.receipt import TlogProof

router = APIRouter(prefix="/v1", tags=["audit"])
MAX_ENTRIES = 1000
MAX_POSITION = 2**53 - 1  # positions and sizes: what a JSON number and the database hold
Position = Annotated[int, PathParam(ge=0, le=MAX_POSITION, description="a log position")]
FEED_RETRY_AFTER = "10"  # seconds, when the process has as many feeds open as it allows
T = TypeVar("T")
log = logging.getLogger("kpi_ledger.api")


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
    responses={
        200: {"content": {"text/plain": {}}},
        404: {"description": "not sealed yet"},
        409: {"description": "the entry no longer matches the checkpoint: the log was altered"},
    },
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
    try:  # never hand out a receipt that its holder's check would fail
        _root, proof = rt.proofs.inclusion(seq, latest.size)
        checked = log.receipt_proof(seq, latest, proof)
    except ProofError as exc:
        raise Problem(409, "The log is damaged", str(exc), rule="log.damaged") from None
    return PlainTextResponse(TlogProof(seq, tuple(checked), latest.note).format())


@router.get(
    "/entries",
    operation_id="get_entries",
    summary="Entries from `start`, the exact canonical bytes, one per line (JSON lines);"
    ' a damaged position is a `{"damaged": {...}}` line in its place',
    responses={200: {"content": {"application/jsonl": {}}}},
)
def entries(
    rt: RuntimeDep,
    caller: CallerDep,
    start: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100,
) -> Response:
    """One line per position from ``start``: the entry's canonical bytes, or, where the
    position is damaged, ``{"damaged": {"seq": N, "problem": "changed" | "deleted",
    "detail": "..."}}`` (its event row is gone, or its bytes no longer hash to the leaf hash
    sealed for it, or the position is missing below the log's size). ``X-Log-Damaged`` lists
    the damaged positions of the page (comma-separated; absent when there are none);
    ``kpi-ledger verify`` says more. For administrators and inspectors."""
    _readers_only(caller, "the log's entries")
    size, shown = read_shown(rt.service.sealed, start, limit)
    damaged = [seq for seq, item in shown if isinstance(item, Damage)]
    body = b"".join(
        (_damaged_line(item) if isinstance(item, Damage) else bytes(item)) + b"\n"
        for _seq, item in shown
    )
    headers = {"X-Log-Size": str(size)}
    if damaged:
        headers["X-Log-Damaged"] = ",".join(str(seq) for seq in damaged)
    after = start + len(shown)
    if after < size:
        headers["Link"] = f'</v1/entries?start={after}&limit={limit}>; rel="next"'
    return Response(body, media_type="application/jsonl", headers=headers)


def _damaged_line(damage: Damage) -> bytes:
    return json.dumps({"damaged": damage.as_dict()}, separators=(",", ":")).encode()


@router.get(
    "/entries/{seq}",
    operation_id="get_entry",
    summary="One entry's exact canonical bytes (to check its receipt): its signer's, or readers'",
    responses={
        200: {"content": {"application/json": {}}},
        409: {"description": "the position is damaged (rule log.damaged)"},
    },
)
def entry(rt: RuntimeDep, caller: CallerDep, seq: Position) -> Response:
    """The bytes a receipt's leaf hash is taken over. The principal who signed the entry's
    fact may read it (an integrating system checks the receipts of what it wrote), as may
    administrators and inspectors. A damaged position is a 409 ``log.damaged`` problem whose
    ``damaged`` member says what is wrong there (as in ``/v1/entries``)."""
    size, shown = read_shown(rt.service.sealed, seq, 1)
    if not shown:
        raise Problem(
            404,
            "Not found",
            f"entry {seq} is not in the log (it has {size} entries)",
            rule="log.size_unknown",
        )
    [(_seq, item)] = shown
    if isinstance(item, Damage):
        raise Problem(
            409,
            "The entry is damaged",
            f"entry {seq} is damaged: {item.detail} (kpi-ledger verify names it)",
            rule="log.damaged",
            extra={"damaged": item.as_dict()},
        )
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
    return Response(bytes(item), media_type="application/json")


@router.get(
    "/feed",
    operation_id="get_feed",
    summary="Server-Sent Events: every position from `from` on, then new ones as they are"
    " sealed (`event: entry`, or `event: damaged` for a damaged position)",
    responses={
        200: {"content": {"text/event-stream": {}}},
        503: {"description": "this process has as many feeds open as it allows (feed.full)"},
    },
)
async def feed(
    request: Request,
    rt: RuntimeDep,
    caller: CallerDep,
    start: Annotated[int, Query(ge=0, le=MAX_POSITION, alias="from")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,15}$")] = None,
) -> FeedResponse:
    """Each position is one event, in order: ``id: <seq>``, ``event: entry``, ``data: <the
    entry's canonical bytes>``; or, where the position is damaged, ``id: <seq>``, ``event:
    damaged``, ``data: {"seq": N, "problem": "changed" | "deleted", "detail": "..."}``. A
    reconnecting client's ``Last-Event-ID`` resumes after that position. ``limit`` ends the
    stream after that many events (otherwise it follows the log, with a comment every 15 s
    to keep the connection open). The caller's token and role are checked again every few
    seconds; when they no longer allow it, or the service stops, the stream ends with
    ``event: closed``, ``data: {"reason": ..., "detail": ...}``. A process serves a bounded
    number of feeds at once (``KPI_LEDGER_FEED_SUBSCRIBERS``, 256 by default): past it, a
    503 ``feed.full`` problem with ``Retry-After``. For administrators and inspectors."""
    _readers_only(caller, "the feed of entries")
    first = int(last_event_id) + 1 if last_event_id is not None else start
    hub: FeedHub = request.app.state.feed
    token = _bearer_token(request)

    def check() -> str | None:
        name = rt.principals.who(token)
        if name is None:
            return "token_revoked"
        if not rt.organisation.caller(name).reads_everything:
            return "access_revoked"
        return None

    async def recheck() -> str | None:
        try:
            return await hub.still_allowed(token, check)
        except Exception:
            log.exception("a feed subscriber's access could not be checked")
            return "unavailable"

    try:
        subscription = hub.subscribe(first)
    except FeedFull as full:
        raise Problem(
            503,
            "Too many feeds",
            f"this process serves {full.bound} feeds at once and all are open; try again"
            " later, or page through /v1/entries",
            rule="feed.full",
            headers={"Retry-After": FEED_RETRY_AFTER},
        ) from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    stream = subscription.events(limit=limit, recheck=recheck)
    return FeedResponse(subscription, stream, headers)


def _bearer_token(request: Request) -> str:
    """The request's bearer token (``api.deps.principal`` has accepted it)."""
    _scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip()


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
