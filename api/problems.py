"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns is a ``Problem``: ``type`` (a URI naming the kind of problem,
``urn:kpi-ledger:problem:<rule>``), ``title``, ``status``, ``detail`` and, when a rule of the
ledger was broken, ``rule`` (the same dotted code the command line prints, e.g.
``separation.self_approval``; ``docs/domain.md`` lists them), plus the fact type and actor when
known. Malformed input is always a 4xx, and nothing is stored when a request fails.

An unexpected failure says what it knows about the write it interrupted (``failure_problem``):
503 ``server.not_recorded`` when nothing was recorded (retry), 500 ``server.outcome_unknown``
when a write's outcome is unknown (retry with the same envelopes: one already recorded is
answered with its original position and status 200), 500 ``server.error`` for a read.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import Refusal, WriteFailed

MEDIA_TYPE = "application/problem+json"
PREFIX = "urn:kpi-ledger:problem:"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # a request of any other method may write
RETRY_AFTER = "1"  # seconds, in the Retry-After of an answer that asks the client to retry

# how a refused fact's rule maps to an HTTP status: who you are, what you may do, what the
# ledger already holds, or what the fact says
_STATUS_BY_RULE_PREFIX = (
    ("envelope.replayed", 409),
    ("idempotency.", 409),
    ("signature.", 422),
    ("key.", 422),
    ("envelope.", 422),
    ("fact.", 422),
    ("role.", 403),
    ("scope.", 403),
    ("separation.", 403),
    ("principal.", 403),
    ("request.", 422),
)


class Problem(Exception):
    """An error answered as problem details."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        rule: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.rule = rule or _rule_for_status(status)
        self.extra = extra or {}
        self.headers = headers

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": PREFIX + self.rule,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "rule": self.rule,
        }
        if instance is not None:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc

    def response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(instance),
            status_code=self.status,
            media_type=MEDIA_TYPE,
            headers=self.headers,
        )


def out_of_scope(principal: str, what: str) -> Problem:
    """403: the caller's roles do not reach what it asked to read."""
    return Problem(403, "Forbidden", f"{principal!r} may not read {what}", rule="auth.out_of_scope")


def _rule_for_status(status: int) -> str:
    return {
        400: "request.malformed",
        401: "auth.unauthenticated",
        403: "auth.forbidden",
        404: "resource.not_found",
        405: "request.method_not_allowed",
        409: "request.conflict",
        413: "request.too_large",
        415: "request.unsupported_media_type",
        422: "request.invalid",
    }.get(status, "request.error")


def status_for_rule(rule: str) -> int:
    for prefix, status in _STATUS_BY_RULE_PREFIX:
        if rule.startswith(prefix):
            return status
    return 409  # a domain rule of the ledger's state: a closed period, a deadline, ...


def refusal_problem(refusal: Refusal) -> Problem:
    """A refused fact as a problem: the status from its rule's family."""
    extra: dict[str, Any] = {"fact_type": refusal.fact_type, "actor": refusal.actor}
    original = getattr(refusal, "original_seq", None)
    if original is not None:
        extra["original_seq"] = original
    return Problem(
        status_for_rule(refusal.rule),
        "The ledger refused the fact",
        refusal.detail,
        rule=refusal.rule,
        extra=extra,
    )


def problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


def damage_handler(request: Request, exc: Exception) -> JSONResponse:
    """A proof the stored tree cannot give (a node or leaf missing, a root that disagrees):
    the log is damaged. Said as such, not as a crash; ``kpi-ledger verify`` names the rest."""
    return Problem(
        409,
        "The log is damaged",
        f"{exc}; an inspector's 'kpi-ledger verify' names every damaged position",
        rule="log.damaged",
    ).response(request.url.path)


def refusal_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refusal)
    return refusal_problem(exc).response(request.url.path)


def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"where": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"where": "", "message": "invalid request"}
    return Problem(
        422,
        "The request is not valid",
        f"{first['where']}: {first['message']}" if first["where"] else first["message"],
        rule="request.invalid",
        extra={"errors": errors},
    ).response(request.url.path)


def http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Not authenticated"}
    headers = getattr(exc, "headers", None)
    return Problem(
        exc.status_code,
        titles.get(exc.status_code, "Request failed"),
        str(exc.detail),
        headers=dict(headers) if headers else None,
    ).response(request.url.path)


def failure_problem(method: str, exc: BaseException) -> Problem:
    """An unexpected error as a problem whose words are true about what was recorded: a write
    that failed says whether any of it reached the log (``WriteFailed.recorded``) or that
    the service cannot tell; a read recorded nothing. No internals (the log has them)."""
    retry = {"Retry-After": RETRY_AFTER}
    if isinstance(exc, WriteFailed) and exc.recorded is False:
        return Problem(
            503,
            "Not recorded",
            "nothing was recorded: retry",
            rule="server.not_recorded",
            headers=retry,
        )
    if isinstance(exc, WriteFailed) and exc.recorded is True:
        return Problem(
            500,
            "Recorded, answer lost",
            "the write was recorded but its answer was lost: retry with the same envelope;"
            " one already recorded is answered with its original position (status 200)",
            rule="server.answer_lost",
            headers=retry,
        )
    if isinstance(exc, WriteFailed) or method.upper() not in READ_METHODS:
        return Problem(
            500,
            "Outcome unknown",
            "the write failed and whether it was recorded is unknown: retry with the same"
            " envelope; one already recorded is answered with its original position"
            " (status 200)",
            rule="server.outcome_unknown",
            headers=retry,
        )
    return Problem(
        500,
        "Internal error",
        "the server failed to answer; try again",
        rule="server.error",
        headers=retry,
    )


def crash_handler(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected error that escaped ``api.app.Failures`` (raised outside it): a problem
    from ``failure_problem``. Starlette then re-raises it and the connection is closed."""
    return failure_problem(request.method, exc).response(request.url.path)
