"""Reads: an employee's scores with their trace, as of any moment, under any policy version.

* ``GET /v1/scores/{employee}/{period}``: the score and its trace from the read models (as the
  projection stands: ``as_of`` in the answer is the last log position among the facts the
  result depends on, a leader's staff results included, so ``?as_of=`` that position
  replays to the same result);
* with ``?as_of=SEQ|TIME`` or ``?policy=VERSION``: recomputed from the log itself, as the log
  stood then and/or under another version of the policy (nothing is written);
* ``GET /v1/scores/{employee}/{period}/diff?as_of=..&policy=..``: the result asked for
  (``then``) against the current one (``now``), with the facts and rules that explain the
  difference (``before`` is then, ``after`` is now);
* ``GET /v1/employees/{employee}/scores``: every period's result and every year's, paged.

Read from the views, a score carries ``published``: the grade as the unit view (after the
quota) and the close published it, the quota reading, the person's rank and the population,
and the close snapshot (``projections/published.py``); its trace ends with the same as lines.
A replayed answer (``as_of``, ``policy``) has no ``published``: the quota is a unit's, see
``GET /v1/units/{agency}/{period}?policy=``.

Who may read: the employee themself; HR officers, supervisors and reviewers whose role covers
the unit the employee was posted to on the period's first day (for the history: any unit
they were ever posted to); administrators and inspectors.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.access import Caller
from api.deps import CallerDep, RuntimeDep
from api.problems import Problem, out_of_scope
from domain.policy import PolicyError
from domain.schemas import PERIOD_PATTERN, period_start
from projections.published import published, published_lines
from projections.replay import Replay, ReplayError, parse_as_of
from projections.score import Result, diff

router = APIRouter(prefix="/v1", tags=["scores"])
NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MONTH = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"
AS_OF = r"^([0-9]{1,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z)$"

Employee = Annotated[str, Path(pattern=NAME, description="the employee's code")]
Month = Annotated[str, Path(pattern=MONTH, description="YYYY-MM")]
AsOf = Annotated[
    str | None,
    Query(pattern=AS_OF, description="a log position, or an RFC 3339 UTC time (…Z)"),
]
PolicyVersion = Annotated[int | None, Query(ge=1, description="another version of the policy")]


def _allowed(rt: RuntimeDep, caller: Caller, employee: str, day: dt.date | None) -> None:
    if not rt.organisation.may_read_employee(caller, employee, day):
        raise out_of_scope(caller.principal, f"{employee!r}'s records")


def _as_of(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return parse_as_of(text)
    except ValueError as exc:
        raise Problem(
            422, "The request is not valid", f"as_of: {exc}", rule="request.invalid"
        ) from None


def _replayed(
    rt: RuntimeDep, employee: str, period: str, as_of: str | None, policy: int | None
) -> Result:
    try:
        return Replay(rt.view).score(employee, period, as_of=_as_of(as_of), policy=policy)
    except ReplayError as exc:
        raise Problem(404, "Not found", str(exc), rule="score.not_found") from None
    except PolicyError as exc:
        raise Problem(422, "The request is not valid", str(exc), rule="policy.invalid") from None


def _stored(rt: RuntimeDep, employee: str, period: str) -> Result:
    key = f"{employee}/{period}"
    score, trace = rt.view.doc("score", key), rt.view.doc("trace", key)
    if score is None or trace is None:
        raise Problem(
            404, "Not found", f"no score for {employee!r} in {period}", rule="score.not_found"
        )
    return Result.from_doc(score, trace["trace"])


@router.get(
    "/scores/{employee}/{period}",
    operation_id="get_score",
    summary="A score with its trace; as of a past position or time, or under another policy",
)
def score(
    rt: RuntimeDep,
    caller: CallerDep,
    employee: Employee,
    period: Month,
    as_of: AsOf = None,
    policy: PolicyVersion = None,
    trace: bool = True,
) -> dict[str, Any]:
    _allowed(rt, caller, employee, period_start(period))
    if as_of is None and policy is None:
        result = _stored(rt, employee, period)
        source = "views"
    else:
        result = _replayed(rt, employee, period, as_of, policy)
        source = "log"
    doc = result.to_doc(trace=trace)
    doc["source"] = source
    if source == "views":
        pub = _published(rt, [doc])[0]
        doc["published"] = pub
        if trace:
            doc["trace"] += [line.to_doc() for line in published_lines(pub)]
    return doc


def _published(rt: RuntimeDep, docs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """The published side of each score document (``projections/published.py``): its unit
    view row and its close, read in two queries."""
    keys = sorted({f"{d['agency']}/{d['period']}" for d in docs})
    units, snapshots = rt.view.docs("unit", keys), rt.view.docs("snapshot", keys)
    out = []
    for d in docs:
        key = f"{d['agency']}/{d['period']}"
        out.append(published(d, units.get(key), snapshots.get(key)))
    return out


@router.get(
    "/scores/{employee}/{period}/diff",
    operation_id="get_score_diff",
    summary="A score as of a past moment and/or under another policy against now, explained",
)
def score_diff(
    rt: RuntimeDep,
    caller: CallerDep,
    employee: Employee,
    period: Month,
    as_of: AsOf = None,
    policy: PolicyVersion = None,
) -> dict[str, Any]:
    _allowed(rt, caller, employee, period_start(period))
    if as_of is None and policy is None:
        raise Problem(
            422, "The request is not valid", "give as_of and/or policy: the result to compare with"
        )
    now = _replayed(rt, employee, period, None, None)
    other = _replayed(rt, employee, period, as_of, policy)
    # read as "then → now": before is the result asked for, after is the current one
    return {"then": other.to_doc(), "now": now.to_doc(), "diff": diff(other, now).to_doc()}


@router.get(
    "/employees/{employee}/scores",
    operation_id="get_employee_scores",
    summary="An employee's results: every period and every year, paged by key",
)
def employee_scores(
    rt: RuntimeDep,
    caller: CallerDep,
    employee: Employee,
    after: Annotated[str | None, Query(pattern=PERIOD_PATTERN.replace("$", "|^[0-9]{4}$"))] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    _allowed(rt, caller, employee, None)
    periods = [k for k in rt.view.keys("score", employee=employee)]
    if after is not None:
        periods = [k for k in periods if k.split("/", 1)[1] > after]
    page = periods[:limit]
    docs = rt.view.docs("score", page)
    years = rt.view.find("year", employee=employee)
    found = [docs[k] for k in page if k in docs]
    for doc, pub in zip(found, _published(rt, found), strict=True):
        doc["published"] = pub
    out: dict[str, Any] = {
        "employee": employee,
        "periods": found,
        "years": years,
    }
    if len(periods) > limit:
        out["next"] = f"/v1/employees/{employee}/scores?after={page[-1].split('/', 1)[1]}"
    return out
