"""The HTTP API: ``create_app(settings)`` builds the FastAPI application.

Routers per resource (``api/routes/``): facts (writes), audit (checkpoint, proofs, receipts,
entries), scores (reads). Every path is versioned (``/v1/...``); the OpenAPI document is served
at ``/v1/openapi.json`` and kept in ``docs/openapi.json``. Errors are RFC 9457 problem
details (``api/problems.py``). A request body larger than ``Settings.max_body`` is refused
with 413 before it is read in full. The runtime (ledger, views, projection runner,
checkpointer) opens with the application and closes with it (``api/runtime.py``).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.routes import audit, facts, health, scores, views
from api.runtime import Runtime, Settings
from domain.errors import Refusal

VERSION = "1.0"
GC_YOUNG = 50_000  # allocations between young collections (CPython's default: 700)


class BodyLimit:
    """Refuse a request body above ``limit`` bytes with a 413 problem, whether it declares
    its length or streams it. (FastAPI's own ``max_body_size`` answers in plain text, outside
    the application's exception handlers, so not as a problem document.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        problem = problems.Problem(
            413,
            "Request too large",
            f"the body is larger than {self.limit:,} bytes",
            rule="request.too_large",
        )
        response = problem.response(scope.get("path"))
        await response(scope, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> MutableMapping[str, Any]:
    return {"type": "http.disconnect"}


def _quiet_collector() -> None:
    """Keep the cyclic garbage collector off a serving process's long-lived heap.

    Everything alive once the service has started (modules, the application, its routes and
    models, the ledger's caches) stays alive until it stops. ``gc.freeze`` moves it out of the
    collector's sight: left in, every full collection walked all of it, about 90 ms each time
    on the bench machine, the service's worst latencies (four such pauses in 3,000 proof
    requests). A larger first threshold makes the young collections rarer too; requests leave
    few cycles behind. Only for a process that serves (``kpi-ledger serve``), not for tests
    that open many applications in one process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def create_app(
    settings: Settings, *, runtime: Callable[[Settings], Runtime] = Runtime.open
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime(settings)
        app.state.runtime = rt
        if settings.quiet_gc:
            _quiet_collector()
        try:
            yield
        finally:
            rt.close()

    app = FastAPI(
        title="kpi-ledger",
        version=VERSION,
        summary="An audit-grade evaluation ledger: signed facts in, verifiable scores out.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    handlers: list[tuple[Any, Callable[..., Any]]] = [
        (problems.Problem, problems.problem_handler),
        (Refusal, problems.refusal_handler),
        (RequestValidationError, problems.validation_handler),
        (StarletteHTTPException, problems.http_handler),
        (Exception, problems.crash_handler),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
    for module in (facts, audit, health, scores, views):
        # The routers' routes go straight onto the application's router. They are complete
        # (prefix, tags, responses are set where they are declared), and the OpenAPI document
        # is the same; ``include_router`` would wrap each router, and FastAPI then walks the
        # wrapped routes twice per request with a context switch per route: a quarter of a
        # proof request's CPU in the profile (performance.md §6).
        app.router.routes.extend(module.router.routes)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    return app
