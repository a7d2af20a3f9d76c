"""The refusal journal (``ledger/journal.py``): the facts the ledger refused, who sent them
and which rule refused them. Nothing of it is in the log (the Merkle log holds only accepted
facts); it is a report the intake writes beside it.

Who reads it (``api/access.py``): administrators and inspectors read every refusal; anyone
else reads only their own (the refusals of facts they signed), and asking for another
actor's is a 403. Paged newest first: ``?limit=`` (at most 200) and ``?cursor=<the last id
seen>``; an answer with more to come carries ``next``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import CallerDep, RuntimeDep
from api.problems import out_of_scope

router = APIRouter(prefix="/v1", tags=["refusals"])
NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
RULE = r"^[a-z][a-z0-9._]{0,63}$"
MAX_LIMIT = 200


class RefusalOut(BaseModel):
    """A refused submission, as the journal keeps it."""

    id: int = Field(description="increasing; the cursor of the next page")
    recorded_at: str = Field(description="when it was refused, by the ledger's clock (UTC)")
    # a field that is not known (an unreadable envelope has no actor) is left out
    actor: str | None = Field(None, description="the signer, as signed; absent: unreadable")
    fact_type: str | None = None
    rule: str = Field(description="the rule that refused it (domain.md §5)")
    detail: str = Field(description="the refusal's words (at most 500 characters)")
    fact_sha256: str | None = Field(
        None, description="hex SHA-256 of the envelope's bytes; absent when they were not kept"
    )
    claimed_at: str | None = Field(None, description="the time the fact claims, if readable")


class RefusalPage(BaseModel):
    items: list[RefusalOut]
    next: str | None = Field(default=None, description="the next page, if there is more")


@router.get(
    "/refusals",
    operation_id="list_refusals",
    summary="Refused submissions (the refusal journal, outside the log), newest first",
    response_model=RefusalPage,
    response_model_exclude_none=True,
    responses={
        403: {
            "description": "another actor's refusals, for a caller who is not an"
            " administrator or an inspector"
        }
    },
)
def refusals(
    rt: RuntimeDep,
    caller: CallerDep,
    actor: Annotated[str | None, Query(pattern=NAME)] = None,
    rule: Annotated[str | None, Query(pattern=RULE)] = None,
    since: Annotated[
        dt.datetime | None, Query(description="refused at or after (ISO 8601; UTC if no zone)")
    ] = None,
    cursor: Annotated[int | None, Query(ge=1, description="the last id of the previous page")] = (
        None
    ),
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> RefusalPage:
    if not caller.reads_everything:
        if actor is not None and actor != caller.principal:
            raise out_of_scope(caller.principal, f"{actor!r}'s refusals")
        actor = caller.principal
    rows = rt.service.journal.page(
        actor=actor, rule=rule, since=since, before=cursor, limit=limit + 1
    )
    page = RefusalPage(items=[RefusalOut(**r.as_dict()) for r in rows[:limit]])
    if len(rows) > limit:
        query = {"actor": actor, "rule": rule, "since": since.isoformat() if since else None}
        kept = {k: v for k, v in query.items() if v is not None}
        page.next = "/v1/refusals?" + urlencode(
            {**kept, "cursor": rows[limit - 1].id, "limit": limit}
        )
    return page
