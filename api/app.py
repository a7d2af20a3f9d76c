"""The HTTP API: ``create_app(settings)`` builds the FastAPI application.

Routers per resource (``api/routes/``): facts (writes), audit (checkpoint, proofs, receipts,
entries), scores (reads). Every path is versioned (``/v1/...``); the OpenAPI document is served
at ``/v1/openapi.json`` and kept in ``docs/openapi.json``. Errors are RFC 9457 problem
details (``api/problems.py``); an unexpected error is a 500 or 503 problem that says what was
recorded, and the connection stays open (``Failures``). A request body larger than
``Settings.max_body`` is refused with 413 before it is read in full. The runtime (ledger,
views, projection runner, checkpointer) opens with the application and closes with it
(``api/runtime.py``), and so does the feed's one reader of the log (``api/feed.py``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.feed import FeedHub, subscribers_bound
from api.routes import audit, facts, health, refusals, scores, views
from api.runtime import Runtime, Settings
from domain.errors import Refusal
from ledger.jobs import is_database_error
from signing.errors import ProofError

VERSION = "1.0"
GC_YOUNG = 50_000  # allocations between young collections (CPython's default: 700)
log = logging.getLogger("kpi_ledger.api")


class BodyLimit:
    """Refuse a request body above ``limit`` bytes with a 413 problem, whether it declares
    its length or streams it. (FastAPI's own ``max_body_size`` answers in plain text, outside
    the application's exception handlers, so not as a problem document.)

    A declared ``Content-Length`` is judged before anything is read (the server delivers no
    more than it declares). A body without one (``Transfer-Encoding: chunked``) is read here,
    up to the limit, and handed to the application whole once it has ended; past the limit
    the answer is the 413, at once. Refusing inside the application's ``receive`` instead
    would surface as FastAPI's 400 "error parsing the body". A refused body is not read to its
    end: the 413 says ``Connection: close``, and the server closes the connection after it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.limit:
                await self._refuse(scope, send)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: say so to the app
                first: MutableMapping[str, Any] = message
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": bytes(body), "more_body": False}
                break
        replay: list[MutableMapping[str, Any]] = [first]

        async def replayed() -> MutableMapping[str, Any]:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        problem = problems.Problem(
            413,
            "Request too large",
            f"the body is larger than {self.limit:,} bytes",
            rule="request.too_large",
            headers={"Connection": "close"},
        )
        response = problem.response(scope.get("path"))
        await response(scope, _no_receive, send)


async def _no_receive() -> MutableMapping[str, Any]:
    return {"type": "http.disconnect"}


class Failures:
    """Answer an unexpected error with a problem (``problems.failure_problem``: 503 when
    nothing was recorded, 500 otherwise, in words true about the write) and keep the
    connection open for the client's next request.

    The innermost middleware: the application's own handlers (problems, refusals, validation,
    404s) have answered everything else by then. Starlette's handler for ``Exception`` answers
    too, but re-raises, and the server then closes a keep-alive connection after every 500;
    here the error is logged once, with its traceback, and not raised again. An error after
    the answer has started (a stream broken midway) is raised: only closing the connection
    tells the client that the body it got is incomplete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        method = str(scope.get("method", "GET"))
        for attempt in (1, 2):
            try:
                await self.app(scope, receive, watched)
                return
            except ClientDisconnect:
                return  # no one to answer
            except Exception as exc:
                if started:
                    raise
                if attempt == 1 and method in problems.READ_METHODS and is_database_error(exc):
                    # A read met a dead pooled connection (a database restart ends them all
                    # at once): drop the broken ones and answer it again, once.
                    await _heal(scope)
                    continue
                path = str(scope.get("path", ""))
                log.error("unexpected error answering %s %s", method, path, exc_info=exc)
                response = problems.failure_problem(method, exc).response(path)
                await response(scope, receive, send)
                return



async def _heal(scope: Scope) -> None:
    app = scope.get("app")
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    if isinstance(runtime, Runtime):
        await run_in_threadpool(runtime.heal)


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


# Swagger UI's files, shipped by the fastapi-offline package: /v1/docs asks nothing of the
# network (a CDN is unreachable on a closed network, and the page would stay blank).
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def _offline_docs(app: FastAPI) -> None:
    """``GET /v1/docs`` (Swagger UI on ``/v1/openapi.json``) and its assets under
    ``/v1/docs/``, all from this service; the online validator badge is off."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.responses import HTMLResponse, Response

    static = Path(fastapi_offline.__file__).parent / "static"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/v1/openapi.json",
            title="kpi-ledger - Swagger UI",
            swagger_js_url="/v1/docs/swagger-ui-bundle.js",
            swagger_css_url="/v1/docs/swagger-ui.css",
            swagger_favicon_url="/v1/docs/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    def asset(name: str) -> Callable[[], Any]:
        body = (static / name).read_bytes()

        async def serve() -> Response:
            return Response(
                body,
                media_type=DOCS_ASSETS[name],
                headers={"Cache-Control": "public, max-age=86400"},
            )

        return serve

    app.add_api_route("/v1/docs", docs, methods=["GET"], include_in_schema=False)
    for name in DOCS_ASSETS:
        app.add_api_route(f"/v1/docs/{name}", asset(name), methods=["GET"], include_in_schema=False)


def create_app(
    settings: Settings,
    *,
    runtime: Callable[[Settings], Runtime] = Runtime.open,
    feed_subscribers: int | None = None,
) -> FastAPI:
    """The application; ``feed_subscribers``: how many ``/v1/feed`` streams a process serves
    at once (default ``KPI_LEDGER_FEED_SUBSCRIBERS``, else 256)."""
    bound = feed_subscribers if feed_subscribers is not None else subscribers_bound()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime(settings)
        app.state.runtime = rt
        hub = FeedHub(
            rt.service.sealed, max_subscribers=bound, recheck_seconds=settings.token_seconds
        )
        try:
            await hub.start()
            app.state.feed = hub
            if settings.quiet_gc:
                _quiet_collector()
            yield
        finally:
            await hub.stop()
            rt.close()

    app = FastAPI(
        title="kpi-ledger",
        version=VERSION,
        summary="An audit-grade evaluation ledger: signed facts in, verifiable scores out.",
        openapi_url="/v1/openapi.json",
        docs_url=None,  # served by _offline_docs, from this service
        redoc_url=None,
        lifespan=lifespan,
    )
    _offline_docs(app)
    handlers: list[tuple[Any, Callable[..., Any]]] = [
        (problems.Problem, problems.problem_handler),
        (Refusal, problems.refusal_handler),
        (ProofError, problems.damage_handler),
        (RequestValidationError, problems.validation_handler),
        (StarletteHTTPException, problems.http_handler),
        (Exception, problems.crash_handler),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
    for module in (facts, audit, health, scores, views, refusals):
        # The routers' routes go straight onto the application's router. They are complete
        # (prefix, tags, responses are set where they are declared), and the OpenAPI document
        # is the same; ``include_router`` would wrap each router, and FastAPI then walks the
        # wrapped routes twice per request with a context switch per route: a quarter of a
        # proof request's CPU in the profile (performance.md §6).
        app.router.routes.extend(module.router.routes)
    app.add_middleware(Failures)  # added first: the innermost of the two
    app.add_middleware(BodyLimit, limit=settings.max_body)
    return app
