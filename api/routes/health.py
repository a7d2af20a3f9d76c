"""Health: what the service and its background jobs are doing, for people and load balancers.

* ``GET /v1/status``: the log's size, the latest checkpoint's, what the read models reflect,
  and the state of each background job (for any authenticated caller);
* ``GET /v1/health``: liveness (no token): the process answers;
* ``GET /v1/ready``: readiness (no token): the database answers and the background jobs are
  alive; 503 with the reason otherwise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, RuntimeDep
from projections.store import APP_NAME

router = APIRouter(prefix="/v1", tags=["health"])


@router.get(
    "/status",
    operation_id="get_status",
    summary="The log's size, the latest checkpoint's, and the position the read models reflect",
)
def status(rt: RuntimeDep, _: PrincipalDep) -> dict[str, Any]:
    """``views``: the last log position the read models reflect (scores, views), and whether
    periods folded there still wait to be scored (``current``: false while a catch-up is
    under way); a client that wrote at position N reads its effect once ``views.seq >= N``
    and ``views.current``."""
    log = rt.service.sealed
    latest = log.latest_checkpoint()
    tracked = rt.view.max_tracking_id(APP_NAME) or 0  # type: ignore[attr-defined]
    pending = rt.view.doc("pending", "evaluations")
    return {
        "log_size": log.log_size(),
        "checkpoint_size": latest.size if latest is not None else 0,
        "views": {
            "seq": rt.view.seq_for_notification(tracked) if tracked else -1,
            "current": not pending or not any(pending.values()),
        },
    }
