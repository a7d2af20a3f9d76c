"""Request dependencies: the runtime, and the authenticated caller.

A request authenticates with ``Authorization: Bearer <token>`` (a token issued by
``kpi-ledger principal add``). An unknown, revoked or missing token is a 401 problem with
``WWW-Authenticate: Bearer``; nothing else is looked at before that.

The dependencies are coroutines: a sync one would cost each request a hop to the thread pool
and back (FastAPI runs sync dependencies there), and these do no blocking work but the token
query, which goes to the pool only when the token was not looked up in the last seconds.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.access import Caller
from api.problems import Problem
from api.runtime import Runtime
from ledger.jobs import is_database_error

_bearer = HTTPBearer(auto_error=False, description="a token from `kpi-ledger principal add`")


async def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


async def principal(
    rt: Annotated[Runtime, Depends(runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The token's principal (all a write needs: the ledger's own rules judge the fact)."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Not authenticated",
            "send Authorization: Bearer <token> (kpi-ledger principal add NAME issues one)",
            rule="auth.missing_token",
            headers=challenge,
        )
    token = credentials.credentials
    try:
        name = rt.principals.remembered(token) or await run_in_threadpool(_who, rt, token)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        raise Problem(  # before anything was read or written: say so, and when to come back
            503,
            "Service unavailable",
            "the database cannot be reached to check the token; nothing was done: retry",
            rule="server.unavailable",
            headers={"Retry-After": "2"},
        ) from exc
    if name is None:
        raise Problem(
            401,
            "Not authenticated",
            "the token is unknown or was revoked",
            rule="auth.invalid_token",
            headers=challenge,
        )
    return name


def _who(rt: Runtime, token: str) -> str | None:
    """The token's principal from the table; a dead pooled connection (a database restart
    ends them all) heals the pools and is tried once more."""
    try:
        return rt.principals.who(token)
    except Exception as exc:
        if not is_database_error(exc):
            raise
    rt.heal()
    return rt.principals.who(token)


def caller(
    rt: Annotated[Runtime, Depends(runtime)], name: Annotated[str, Depends(principal)]
) -> Caller:
    """The principal with its roles and units, for deciding what it may read."""
    return rt.organisation.caller(name)


RuntimeDep = Annotated[Runtime, Depends(runtime)]
CallerDep = Annotated[Caller, Depends(caller)]
PrincipalDep = Annotated[str, Depends(principal)]
