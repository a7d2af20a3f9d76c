"""Health: what the service and its background jobs are doing, for people and load balancers.

* ``GET /v1/status``: the log's size, the latest checkpoint's, what the read models reflect,
  and the state of each background job (for any authenticated caller);
* ``GET /v1/health``: liveness (no token): the process answers;
* ``GET /v1/ready``: readiness (no token): the database answers and the background jobs are
  alive; 503 with the reason otherwise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, RuntimeDep
from api.runtime import NO_LEADER, UNKNOWN, Runtime
from ledger.jobs import FAILED, OK, JobHealth
from projections.store import APP_NAME

router = APIRouter(prefix="/v1", tags=["health"])


class Readiness(BaseModel):
    ready: bool
    database: str = Field(description="ok, or why the database cannot be used")
    jobs: dict[str, str] = Field(description="each background job's state in words")


def _views(rt: Runtime, size: int, job: JobHealth) -> dict[str, Any]:
    tracked = rt.view.max_tracking_id(APP_NAME) or 0  # type: ignore[attr-defined]
    pending = rt.view.doc("pending", "evaluations")
    seq = rt.view.seq_for_notification(tracked) if tracked else -1
    scored = not pending or not any(pending.values())
    healthy = job.state == OK
    behind = max(size - 1 - seq, 0)
    if not healthy:
        state = job.summary()
    elif behind or not scored:
        state = f"behind {behind}" if behind else "scoring"
    else:
        state = "current"
    return {"seq": seq, "current": scored and healthy, "state": state}


def _feed_health(request: Request) -> str:
    hub = getattr(request.app.state, "feed", None)
    return hub.health() if hub is not None else "off"


@router.get(
    "/status",
    operation_id="get_status",
    summary="The log's size, the latest checkpoint's, what the read models reflect, and the"
    " state of each background job",
)
def status(request: Request, rt: RuntimeDep, _: PrincipalDep) -> dict[str, Any]:
    """``views``: the last log position the read models reflect (scores, views), whether
    they are up to date and healthy (``current``: false while periods folded there wait to be
    scored, or while the projection runner is failing), and ``state`` in words (``current``,
    ``behind N``, ``retrying since T (error)``, ``failed since T (...)``); a client that wrote
    at position N reads its effect once ``views.seq >= N`` and ``views.current``.
    ``checkpointer``: ``ok``, ``retrying since T (error)``, ``refusing since T (why)`` — an
    integrity alarm: an entry the intake would refuse, or a log that no longer extends what
    was signed — ``no leader since T`` or ``off``. ``jobs``: both jobs in detail (state,
    since, which process leads, its last heartbeat and last success)."""
    log = rt.service.sealed
    size = log.log_size()
    latest = log.latest_checkpoint()
    jobs = rt.jobs()
    return {
        "log_size": size,
        "checkpoint_size": latest.size if latest is not None else 0,
        "checkpointer": jobs["checkpointer"].summary(),
        "views": _views(rt, size, jobs["projections"]),
        "feed": _feed_health(request),
        "jobs": {name: job.as_dict() for name, job in jobs.items()},
    }


@router.get(
    "/health",
    operation_id="get_health",
    summary="Liveness: the process answers (no token; for a load balancer or systemd)",
)
async def health() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/ready",
    operation_id="get_ready",
    response_model=Readiness,
    summary="Readiness: the database answers and the background jobs are alive (503 if not)",
    responses={503: {"model": Readiness, "description": "not ready, and why"}},
)
def ready(rt: RuntimeDep, response: Response) -> Readiness:
    """No token needed: what a load balancer asks before sending this process requests.
    Ready when the database answers and each background job has a live leader (here or in
    another process on the same database) that has not given up. A checkpointer that is
    *refusing* (an integrity alarm) leaves the service ready — reads and writes are still
    true — and shows in ``/v1/status``."""
    database = rt.database_answers()
    jobs = rt.jobs()  # this process's own jobs answer from memory even without the database
    words = {name: job.summary() for name, job in jobs.items()}
    live = all(job.state not in (FAILED, NO_LEADER, UNKNOWN) for job in jobs.values())
    answer = Readiness(ready=database == "ok" and live, database=database, jobs=words)
    if not answer.ready:
        response.status_code = 503
        response.headers["Retry-After"] = "2"
    return answer
