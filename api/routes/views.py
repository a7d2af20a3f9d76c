"""Reads of the read models beyond one score: units, close snapshots, appeals (with the facts
they cite), anti-gaming flags, "HR decision due" items.

Lists are paged by key: ``?limit=`` (at most 200) and ``?after=<the last key seen>``; an
answer with more to come carries ``next``. A caller sees the items about the people it may
read (``api/access.py``): its own, those under its units, or everyone for administrators and
inspectors; a unit view or a snapshot needs a role over that agency (or reading everything),
except that a person with a row in it reads her own row, the distribution and the quota checks
(counts and cut-off, no one else's name): ``projections/published.py``.

A unit view with ``?as_of=SEQ|TIME`` and/or ``?policy=VERSION`` is recomputed from the log
(``Replay.unit``: everyone in the agency scored as the log stood then and/or under that
version of the policy, leaders after their staff, then the same quota code; nothing is
written), marked ``"source": "log"``; ``/diff`` sets that result (``then``) against the
current one (``now``) row by row and quota check by quota check. The same reading rules
apply to replayed answers: a person with a row in them reads her own row. Access is decided
before anything is replayed: a caller who may not read the agency's views and was not posted
in it in that period is refused (403) without a replay, before any answer a replay could give
(an unknown policy version, an invalid ``as_of``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.access import Caller
from api.deps import CallerDep, RuntimeDep
from api.problems import Problem, out_of_scope
from api.runtime import Runtime
from domain.policy import PolicyError
from domain.schemas import period_start
from ledger.journal import FLAG_KIND as JOURNAL_FLAG
from projections.engine import hr_due_overdue
from projections.published import own_snapshot, own_unit, own_unit_diff, unit_diff
from projections.replay import Replay, ReplayError, parse_as_of
from signing.facts import read_fact

router = APIRouter(prefix="/v1", tags=["views"])
CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MONTH = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"
KEY = r"^[A-Za-z0-9._/:-]{1,300}$"
AS_OF = r"^([0-9]{1,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z)$"
MAX_LIMIT = 200
SCAN = 5  # pages read at most to fill one answer when most items are out of the caller's scope

Agency = Annotated[str, Path(pattern=CODE, description="an agency's code")]
Month = Annotated[str, Path(pattern=MONTH, description="YYYY-MM")]
After = Annotated[str | None, Query(pattern=KEY, description="the last key of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
AsOf = Annotated[
    str | None,
    Query(pattern=AS_OF, description="a log position, or an RFC 3339 UTC time (…Z)"),
]
PolicyVersion = Annotated[
    int | None, Query(ge=1, description="another version of the agency's policy line")
]


def _scoped(
    rt: Runtime, caller: Caller, view: str, agency: str, period: str, doc: dict[str, Any] | None
) -> dict[str, Any]:
    """The whole view for a role over the agency; for a person with a row in it, the view as
    ``own_unit`` / ``own_snapshot`` give it (counts, no one else's name, her own row)."""
    if not rt.organisation.may_read_unit(caller, agency):
        own = own_unit if view == "unit" else own_snapshot
        mine = own(doc, caller.principal) if doc is not None else None
        if mine is None:
            raise out_of_scope(caller.principal, f"{agency}'s views")
        return mine
    if doc is None:
        raise Problem(
            404, "Not found", f"no {view} for {agency} in {period}", rule="view.not_found"
        )
    return doc


def _unit_doc(rt: Runtime, caller: Caller, view: str, agency: str, period: str) -> dict[str, Any]:
    return _scoped(rt, caller, view, agency, period, rt.view.doc(view, f"{agency}/{period}"))


def _may_replay(rt: Runtime, caller: Caller, agency: str, period: str) -> None:
    """Refuse (403) before any replay, and so before any error a replay could answer, a
    caller who may not read the agency's views and was not posted in it in ``period`` (the
    only callers who may have a row in the replayed result)."""
    if rt.organisation.may_read_unit(caller, agency):
        return
    day = period_start(period)
    posted = rt.organisation.posting_unit(caller.principal, day)
    if not any(agency in rt.organisation.chain(unit) for unit in posted):
        raise out_of_scope(caller.principal, f"{agency}'s views")


def _replayed_unit(
    rt: Runtime, agency: str, period: str, as_of: str | None, policy: int | None
) -> dict[str, Any] | None:
    """The unit view recomputed from the log, marked ``"source": "log"`` (None: no one in
    the agency to score then)."""
    replay = Replay(rt.view)
    try:
        when = replay.position(parse_as_of(as_of)) if as_of is not None else None
    except (ValueError, ReplayError) as exc:
        raise Problem(
            422, "The request is not valid", f"as_of: {exc}", rule="request.invalid"
        ) from None
    try:
        doc = replay.unit(agency, period, as_of=when, policy=policy)
    except PolicyError as exc:
        raise Problem(422, "The request is not valid", str(exc), rule="policy.invalid") from None
    except ReplayError as exc:
        if policy is not None and "has no version" in str(exc):
            raise Problem(404, "Not found", str(exc), rule="policy.not_found") from None
        return None
    return {**doc, "source": "log"}


@router.get(
    "/units/{agency}/{period}",
    operation_id="get_unit",
    summary="A unit's grades and quota; as of a past position or time, or under another policy",
)
def unit(
    rt: RuntimeDep,
    caller: CallerDep,
    agency: Agency,
    period: Month,
    as_of: AsOf = None,
    policy: PolicyVersion = None,
) -> dict[str, Any]:
    if as_of is None and policy is None:
        return _unit_doc(rt, caller, "unit", agency, period)
    _may_replay(rt, caller, agency, period)
    doc = _replayed_unit(rt, agency, period, as_of, policy)
    return _scoped(rt, caller, "unit", agency, period, doc)


@router.get(
    "/units/{agency}/{period}/diff",
    operation_id="get_unit_diff",
    summary="A unit's grades as of a past moment and/or under another policy against now",
)
def unit_difference(
    rt: RuntimeDep,
    caller: CallerDep,
    agency: Agency,
    period: Month,
    as_of: AsOf = None,
    policy: PolicyVersion = None,
) -> dict[str, Any]:
    """``then`` (the result asked for) against ``now`` (the log's head, the policy in force),
    both recomputed from the log; ``diff`` reads then → now: each person's total and grade on
    each side, each quota check's reading, population, allowed and cut-off on each side."""
    if as_of is None and policy is None:
        raise Problem(
            422,
            "The request is not valid",
            "give as_of and/or policy: the result to compare with",
            rule="request.invalid",
        )
    _may_replay(rt, caller, agency, period)
    then = _replayed_unit(rt, agency, period, as_of, policy)
    now = _replayed_unit(rt, agency, period, None, None)
    if rt.organisation.may_read_unit(caller, agency):
        if then is None or now is None:
            raise Problem(
                404, "Not found", f"no unit for {agency} in {period}", rule="view.not_found"
            )
        return {"then": then, "now": now, "diff": unit_diff(then, now)}
    mine_then = own_unit(then, caller.principal) if then is not None else None
    mine_now = own_unit(now, caller.principal) if now is not None else None
    if then is None or now is None or mine_then is None or mine_now is None:
        raise out_of_scope(caller.principal, f"{agency}'s views")
    difference = own_unit_diff(unit_diff(then, now), caller.principal)
    return {"then": mine_then, "now": mine_now, "diff": difference}


@router.get(
    "/snapshots/{agency}/{period}",
    operation_id="get_snapshot",
    summary="A closed period's snapshot: the recorded hash against the recomputed one",
)
def snapshot(rt: RuntimeDep, caller: CallerDep, agency: Agency, period: Month) -> dict[str, Any]:
    return _unit_doc(rt, caller, "snapshot", agency, period)


def _subject_period(doc: dict[str, Any]) -> str | None:
    """The month of a flag's ``employee/YYYY-MM`` subject (None for another shape)."""
    parts = str(doc.get("subject", "")).split("/")
    month = parts[1] if len(parts) == 2 else ""
    shaped = len(month) == 7 and month[4] == "-" and month.replace("-", "").isdigit()
    return month if shaped else None


def _paged(
    rt: Runtime,
    caller: Caller,
    view: str,
    path: str,
    *,
    after: str | None,
    limit: int,
    person: Callable[[dict[str, Any]], str | None],
    keep: Callable[[dict[str, Any]], bool] = lambda _: True,
    employee: str | None = None,
    period: Callable[[dict[str, Any]], str | None] = lambda _: None,
) -> dict[str, Any]:
    """A page of ``view``: the documents ``keep`` accepts about people ``caller`` may read
    (``person`` None: about no one, ``keep`` alone decides) — in the document's ``period``
    when it has one (a unit role reaches the people posted under it in that period), at
    any time otherwise."""
    allowed: dict[tuple[str, str | None], bool] = {}

    def may(doc: dict[str, Any]) -> bool:
        who = person(doc)
        if who is None:
            return True
        month = period(doc)
        if (who, month) not in allowed:
            day = period_start(month) if month is not None else None
            allowed[who, month] = rt.organisation.may_read_employee(caller, who, day)
        return allowed[who, month]

    items: list[dict[str, Any]] = []
    cursor, more = after, False
    for _ in range(SCAN):
        rows = rt.view.page(view, after=cursor, limit=limit + 1, employee=employee)
        more = len(rows) > limit
        for key, doc in rows[:limit]:
            cursor = key
            if keep(doc) and may(doc):
                items.append({"key": key, **doc})
                if len(items) == limit:
                    break
        if len(items) == limit or not more:
            break
    out: dict[str, Any] = {"items": items}
    if more and cursor is not None:
        out["next"] = f"{path}?after={cursor}&limit={limit}"
    return out


@router.get("/appeals", operation_id="list_appeals", summary="Appeals with their answer deadline")
def appeals(
    rt: RuntimeDep,
    caller: CallerDep,
    open: bool | None = None,
    appellant: Annotated[str | None, Query(pattern=NAME)] = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    return _paged(
        rt,
        caller,
        "appeal",
        "/v1/appeals",
        after=after,
        limit=limit,
        person=lambda d: str(d["appellant"]),
        keep=lambda d: open is None or d["open"] is open,
        employee=appellant,
    )


@router.get(
    "/appeals/{appellant}/{appeal}",
    operation_id="get_appeal",
    summary="An appeal, with the facts it contests and the facts that filed and closed it",
)
def appeal(
    rt: RuntimeDep,
    caller: CallerDep,
    appellant: Annotated[str, Path(pattern=NAME)],
    appeal: Annotated[str, Path(pattern=CODE)],
) -> dict[str, Any]:
    if not rt.organisation.may_read_employee(caller, appellant, None):
        raise out_of_scope(caller.principal, f"{appellant!r}'s appeals")
    doc = rt.view.doc("appeal", f"{appellant}/{appeal}")
    if doc is None:
        raise Problem(
            404, "Not found", f"no appeal {appeal!r} by {appellant!r}", rule="view.not_found"
        )
    seqs = [*doc["contested"], doc["filed_seq"], doc.get("closed_seq")]
    return {**doc, "cited": [_fact(rt, s) for s in dict.fromkeys(seqs) if s is not None]}


def _fact(rt: Runtime, seq: int) -> dict[str, Any]:
    entry = rt.service.sealed.read_entry(seq)
    if entry is None:
        return {"seq": seq, "missing": True}
    fact = read_fact(entry.envelope, strict=False)
    return {
        "seq": seq,
        "type": fact.type,
        "actor": fact.actor,
        "time": fact.time,
        "data": fact.data,
        "recorded_at": entry.recorded_at,
    }


@router.get("/flags", operation_id="list_flags", summary="Anti-gaming flags, each with its facts")
def flags(
    rt: RuntimeDep,
    caller: CallerDep,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,40}$")] = None,
    employee: Annotated[str | None, Query(pattern=NAME)] = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """The projection's flags (rebuilt from the log), paged by key. The first page (no
    ``after``) starts with the flags of the refusal journal, marked ``"source": "journal"``
    (``ledger/journal.py``: self-approval attempts, counted when asked, not paged), each
    naming its refusals instead of log positions. A ``same_evidence`` flag names only the
    claimants the caller may read in their claim's period; any other claimant reads
    ``"another claimant"``, with her claim's position."""
    page = _paged(
        rt,
        caller,
        "flag",
        "/v1/flags",
        after=after,
        limit=limit,
        person=lambda d: str(d["subject"]).split("/")[0],
        keep=lambda d: kind is None or d["kind"] == kind,
        employee=employee,
        period=_subject_period,
    )
    page["items"] = [_claimants_in_scope(rt, caller, f) for f in page["items"]]
    if after is None and kind in (None, JOURNAL_FLAG):
        attempts = rt.service.journal.attempts(actor=employee)
        journal = [
            f.as_dict()
            for f in attempts
            if rt.organisation.may_read_employee(caller, f.actor, period_start(f.period))
        ]
        page["items"] = journal + page["items"]
    return page


ANOTHER = "another claimant"


def _claimants_in_scope(rt: Runtime, caller: Caller, flag: dict[str, Any]) -> dict[str, Any]:
    """A ``same_evidence`` flag as ``caller`` may read it: each claim whose employee she may
    not read in that claim's period reads ``"another claimant"`` (its position stays: a
    position names no one, and ``/v1/entries/{seq}`` is for administrators and inspectors),
    and ``why`` is rebuilt from the claims so. Any other flag is returned as it is."""
    claims = flag.get("claims")
    if flag.get("kind") != "same_evidence" or not isinstance(claims, list):
        return flag
    subject_period = str(flag["subject"]).split("/", 1)[-1]
    shown = []
    for claim in claims:
        period = claim.get("period") or subject_period
        readable = rt.organisation.may_read_employee(
            caller, claim["employee"], period_start(period)
        )
        shown.append(claim if readable else {**claim, "employee": ANOTHER})
    if shown == claims:
        return flag
    why = f"evidence {str(flag['evidence'])[:12]}… claimed by " + ", ".join(
        f"{c['employee']} (at {c['seq']})" for c in shown
    )
    return {**flag, "claims": shown, "why": why}


@router.get(
    "/hr-due", operation_id="list_hr_due", summary='"HR decision due" items (two failing years)'
)
def hr_due(
    rt: RuntimeDep,
    caller: CallerDep,
    open: bool | None = None,
    overdue: bool | None = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Each item as the projection keeps it (``decisions``: every HR decision proposed about
    the employee since the item was raised, with its position, time, status and whether its
    kind resolves the item under the policy's ``hr_decision.resolving_kinds``;
    ``resolved_by``: the first that does), plus ``overdue``, judged now by the ledger's
    clock: ``{due, as_of, by_seconds, by_days}`` for an item still open past its deadline
    (``as_of`` now) or resolved after it (``as_of`` the decision's time), else null."""
    now = rt.service.clock()

    def keep(doc: dict[str, Any]) -> bool:
        if open is not None and bool(doc.get("open")) is not open:
            return False
        return overdue is None or (hr_due_overdue(doc, now) is not None) is overdue

    page = _paged(
        rt,
        caller,
        "hr_due",
        "/v1/hr-due",
        after=after,
        limit=limit,
        person=lambda d: str(d["employee"]),
        keep=keep,
    )
    for item in page["items"]:
        item["overdue"] = hr_due_overdue(item, now)
    return page


@router.get(
    "/findings",
    operation_id="list_findings",
    summary="Inspectors' findings, each with the log positions it cites",
)
def findings(
    rt: RuntimeDep,
    caller: CallerDep,
    employee: Annotated[str | None, Query(pattern=NAME)] = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """A finding about an employee is read by whoever may read that employee; one about a
    unit by whoever may read the unit."""

    def keep(doc: dict[str, Any]) -> bool:
        return doc["employee"] is not None or rt.organisation.may_read_unit(caller, doc["unit"])

    return _paged(
        rt,
        caller,
        "finding",
        "/v1/findings",
        after=after,
        limit=limit,
        person=lambda d: d["employee"],
        keep=keep,
        employee=employee,
    )


@router.get(
    "/hr-decisions",
    operation_id="list_hr_decisions",
    summary="HR decisions, each with its acts and the closed periods it rests on",
)
def hr_decisions(
    rt: RuntimeDep,
    caller: CallerDep,
    employee: Annotated[str | None, Query(pattern=NAME)] = None,
    after: After = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """``grounds``: for each period the decision cites, the close of the agency the employee
    was in (its position and the snapshot hash it carried); ``acts``: proposed, issued,
    withdrawn, overturned, each with its position."""
    return _paged(
        rt,
        caller,
        "hr_decision",
        "/v1/hr-decisions",
        after=after,
        limit=limit,
        person=lambda d: str(d["employee"]),
        employee=employee,
    )
