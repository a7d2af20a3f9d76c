"""The read models' commands: score, rebuild, snapshot, show, and close (which signs the
snapshot the views compute)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from api.cli import common
from api.cli.common import UsageError, caught_up_view, ledger_database
from api.progress import ProgressBar
from domain.errors import Refusal, WriteFailed
from domain.policy import PolicyError
from projections import runners as projection_runners
from projections.engine import next_close_snapshot, snapshot_hash
from projections.replay import Replay, ReplayError, parse_as_of
from projections.score import Result, diff, exact, show

CLOSE_ATTEMPTS = 5  # a close computed again when another entry landed first
CLOSE_PAUSE = 0.5  # seconds between attempts (a running service's runner catching up)


def _as_of(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return parse_as_of(text)
    except ValueError as exc:
        raise UsageError(f"--as-of: {exc}") from None


def _print_result(result: Result, *, trace: bool) -> None:
    print(
        f"{result.employee} {result.period} as of log position {result.as_of}:"
        f" policy {result.policy} (published at {result.policy_seq}),"
        f" catalogue v{result.catalogue} (at {result.catalogue_seq})"
    )
    print(
        f"  Q {show(result.Q)}%  C {show(result.C)}%  P {show(result.P)}%"
        f"  E {show(result.E)}%  S {show(result.S)}%"
    )
    print(
        f"  task {show(result.task)} + general {show(result.general)} = {show(result.total)}"
        f" -> {result.grade}"
        + (f" (points: {result.points_grade})" if result.grade != result.points_grade else "")
        + f"  [exact total {exact(result.total)}]"
    )
    for why in result.overrides:
        print(f"  override: {why}")
    if trace:
        for line in result.trace:
            where = f"{line.seq:>8}" if line.seq is not None else " " * 8
            rule = f"  [{line.rule}]" if line.rule else ""
            print(f"  {where}  {line.fact or '-':<32} {line.subject:<14} {line.effect}{rule}")


def _print_published(view: Any, score: dict[str, Any]) -> None:
    """What the unit view (after the quota) and the close published for the person, from the
    views (``projections/published.py``); nothing while the unit view has no row for her."""
    from projections.published import published, show_exact

    key = f"{score['agency']}/{score['period']}"
    pub = published(score, view.doc("unit", key), view.doc("snapshot", key))
    if pub is None:
        return
    moved = " (moved by the quota)" if pub["moved_by_quota"] else ""
    print(f"  published: {pub['grade']}{moved}")
    quota = pub["quota"]
    if quota is not None:
        group = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in quota["group"].items())
        cut = show_exact(quota["cut_off"]) if quota["cut_off"] else "-"
        held = (
            f"rank {quota['rank']} of {quota['holders']} holding the grade"
            if quota["rank"] is not None
            else f"{quota['holders']} holding the grade, not she"
        )
        print(
            f"  quota ({quota['reading']}, {group}): {held}, {quota['allowed']} allowed in a"
            f" population of {quota['population']}, cut-off {cut}"
        )
    close = pub["snapshot"]
    if close is not None:
        state = "matches" if close["matches"] else "DOES NOT MATCH the views"
        total = show_exact(close["total"]) if close["total"] else "-"
        print(
            f"  closed at position {close['close_seq']} ({close['closed_at']}): published"
            f" {close['grade'] or '-'}, total {total}; the snapshot {state}"
            + ("; set aside by an appeal" if close["set_aside"] else "")
        )


def cmd_score(args: argparse.Namespace) -> int:
    view = caught_up_view(ledger_database(args))
    try:
        replay = Replay(view)
        try:
            result = replay.score(
                args.employee, args.period, as_of=_as_of(args.as_of), policy=args.policy
            )
            other = None
            if args.diff_as_of is not None or args.diff_policy is not None:
                other = replay.score(
                    args.employee,
                    args.period,
                    as_of=_as_of(args.diff_as_of)
                    if args.diff_as_of is not None
                    else _as_of(args.as_of),
                    policy=args.diff_policy if args.diff_policy is not None else args.policy,
                )
        except (ReplayError, PolicyError) as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            doc: dict[str, Any] = result.to_doc()
            if other is not None:
                doc = {"result": doc, "other": other.to_doc(), "diff": diff(result, other).to_doc()}
            print(json.dumps(doc, ensure_ascii=False, indent=2))
            return 0
        _print_result(result, trace=args.trace)
        if args.as_of is None and args.policy is None:
            _print_published(view, result.to_doc())
        if other is not None:
            print()
            _print_result(other, trace=args.trace)
            d = diff(result, other)
            print("\ndifference:")
            for what, before, after in d.changes:
                print(f"  {what}: {before} -> {after}")
            for side, lines in (("first: ", d.only_before), ("second:", d.only_after)):
                for line in lines:
                    where = line.seq if line.seq is not None else "-"
                    fact = line.fact or "-"
                    print(f"  only in the {side} {where} {fact} {line.subject}: {line.effect}")
        return 0
    finally:
        projection_runners.close_view(view)


def cmd_rebuild(args: argparse.Namespace) -> int:
    database = ledger_database(args)
    view = projection_runners.open_view(database)
    total = view.head()[0] + 1
    projection_runners.close_view(view)
    bar = ProgressBar(f"rebuild {args.name}", enabled=True if args.progress else None)
    try:
        done = projection_runners.rebuild(database, progress=lambda n: bar(n, total))
    except projection_runners.RunnerBusy as exc:
        raise UsageError(f"{exc}: stop the running service first") from None
    finally:
        bar.close()
    print(f"rebuilt {args.name} from {done} entries")
    return 0


def close_snapshot(database: Any, agency: str, period: str) -> dict[str, Any]:
    """The snapshot document a ``period.closed`` of ``agency`` for ``period`` appended next
    must hash (the views brought up to the head first), as the demo's closes compute it."""
    view = caught_up_view(database)
    try:
        if view.doc("unit", f"{agency}/{period}") is None:
            raise UsageError(f"no scores for agency {agency!r} in {period}")
        return next_close_snapshot(view, agency, period)
    finally:
        projection_runners.close_view(view)


def cmd_snapshot(args: argparse.Namespace) -> int:
    published = close_snapshot(ledger_database(args), args.agency, args.period)
    if args.json:
        print(json.dumps(published, ensure_ascii=False, indent=2))
    print(snapshot_hash(published))
    return 0


def _describe(published: dict[str, Any], digest: str, signer: str) -> str:
    results = published["results"]
    grades = Counter(r["grade"] for r in results)
    shown = ", ".join(f"{grade} {n}" for grade, n in sorted(grades.items()))
    return (
        f"close {published['agency']} {published['period']}, signed by {signer}:\n"
        f"  snapshot {digest}\n"
        f"  {len(results)} people ({shown or 'none'}), as the log stands before position"
        f" {published['before']}\n"
    )


def _confirmed(args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(
            "nothing signed: stdin is not a terminal, so the close cannot be confirmed;"
            " check the snapshot above and run again with --yes"
        )
    sys.stderr.write("sign and submit this close? [y/N] ")  # stdout: the result only
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_close(args: argparse.Namespace) -> int:
    """Compute the close's snapshot, show it, and sign and submit ``period.closed`` so that
    it lands at the very position the snapshot was computed for: if another entry lands
    first, the snapshot is computed again (``CLOSE_ATTEMPTS`` times at most)."""
    from signing.facts import sign_fact
    from signing.keys import read_signing_key

    key = read_signing_key(Path(args.key))
    database = ledger_database(args)
    ledger = common.service(args)
    try:
        shown: list[dict[str, Any]] | None = None
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            published = close_snapshot(database, args.agency, args.period)
            digest = snapshot_hash(published)
            if shown != published["results"]:  # the first time, or other results
                if shown is not None:
                    sys.stderr.write("the results changed meanwhile:\n")
                sys.stderr.write(_describe(published, digest, key.name))
                if not _confirmed(args):
                    sys.stderr.write("not signed\n")
                    return 1
                shown = published["results"]
            before = published["before"]
            envelope = sign_fact(
                key,
                "period.closed",
                {"agency": args.agency, "period": args.period, "snapshot": digest},
            )

            def next_entry(fact: Any, before: int = before) -> None:
                # under the writer lock: the position this fact would take
                if ledger.sealed.log_size() != before:
                    raise _NotNext(before, fact)

            try:
                (outcome,) = ledger.submit_many([envelope.to_bytes()], screen=next_entry)
            except WriteFailed as exc:
                if exc.recorded is not False:
                    raise
                outcome = _NotNext(before, None)
            if isinstance(outcome, _NotNext):
                sys.stderr.write(
                    f"another entry landed before position {before}: computing the snapshot"
                    f" again (attempt {attempt + 1} of {CLOSE_ATTEMPTS})\n"
                    if attempt < CLOSE_ATTEMPTS
                    else ""
                )
                time.sleep(CLOSE_PAUSE * attempt)
                continue
            if isinstance(outcome, Refusal):
                sys.stderr.write(f"refused: {outcome}\n{_explain(outcome, args)}")
                return 1
            print(f"{outcome.seq}\tperiod.closed {args.agency} {args.period} snapshot {digest}")
            return 0
    finally:
        ledger.close()
    sys.stderr.write(
        f"refused: the log kept moving; after {CLOSE_ATTEMPTS} attempts the close could not be"
        " the very next entry after the snapshot it carries; nothing was signed into the log."
        " Try again when the writers are quieter\n"
    )
    return 1


_CLOSE_RULES = {
    "state.invalid": "a period closes once (or the unit is not an agency); after the close, a"
    " fact about the period needs an approved late-entry request",
    "period.not_ended": "a period closes only after its last day",
    "role.missing": "the key's principal must hold the hr role for the agency",
    "scope.outside": "the key's principal holds the hr role, but not over this agency",
    "reference.unknown": "the ledger knows no such agency, or no policy for the period",
    "policy.none": "no published policy applies to the agency in that period",
}


def _explain(refusal: Refusal, args: argparse.Namespace) -> str:
    """A close's refusal in words: what the rule means for closing a period."""
    why = _CLOSE_RULES.get(refusal.rule)
    if why is None:
        return ""
    return f"  {args.agency} {args.period} was not closed: {why}\n"


class _NotNext(Refusal):
    """Another entry landed after the snapshot was computed: nothing recorded."""

    rule = "period.close_not_next"

    def __init__(self, before: int, fact: Any) -> None:
        super().__init__(
            f"the close must be entry {before}, right after the snapshot it carries",
            fact_type="period.closed",
            actor=getattr(fact, "actor", None),
        )


def cmd_show(args: argparse.Namespace) -> int:
    if args.view == "refusals":
        return _show_refusals(args)
    replays = (args.as_of, args.policy, args.diff_as_of, args.diff_policy)
    if any(x is not None for x in replays):
        return _show_unit_replayed(args)
    view = caught_up_view(ledger_database(args))
    try:
        docs = view.find(args.view, employee=args.employee, agency=args.agency, period=args.period)
        if args.open:
            docs = [d for d in docs if d.get("open")]
        for doc in docs:
            print(json.dumps(doc, ensure_ascii=False, sort_keys=True))
        return 0
    finally:
        projection_runners.close_view(view)


def _show_unit_replayed(args: argparse.Namespace) -> int:
    """``show unit`` recomputed from the log (``Replay.unit``): as of ``--as-of``, under
    ``--policy``; with ``--diff-as-of`` / ``--diff-policy``, against that second result
    (``{"result", "other", "diff"}``, the diff reading first → second), one JSON line."""
    from projections.published import unit_diff

    if args.view != "unit" or args.agency is None or args.period is None:
        raise UsageError(
            "--as-of, --policy, --diff-as-of and --diff-policy replay a unit view: give"
            " show unit --agency A --period P"
        )
    view = caught_up_view(ledger_database(args))
    try:
        replay = Replay(view)
        try:
            first = replay.unit(
                args.agency, args.period, as_of=_as_of(args.as_of), policy=args.policy
            )
            doc: dict[str, Any] = first
            if args.diff_as_of is not None or args.diff_policy is not None:
                second = replay.unit(
                    args.agency,
                    args.period,
                    as_of=_as_of(args.diff_as_of if args.diff_as_of is not None else args.as_of),
                    policy=args.diff_policy if args.diff_policy is not None else args.policy,
                )
                doc = {"result": first, "other": second, "diff": unit_diff(first, second)}
        except (ReplayError, PolicyError) as exc:
            raise UsageError(str(exc)) from None
        print(json.dumps(doc, ensure_ascii=False, sort_keys=True))
        return 0
    finally:
        projection_runners.close_view(view)


def _show_refusals(args: argparse.Namespace) -> int:
    """The refusal journal (``ledger/journal.py``), newest first, one JSON line each."""
    from domain.service import LedgerService

    service = LedgerService(ledger_database(args))
    try:
        cursor: int | None = None
        while True:
            rows = service.journal.page(actor=args.actor, rule=args.rule, before=cursor, limit=500)
            for row in rows:
                print(json.dumps(row.as_dict(), ensure_ascii=False, sort_keys=True))
            if len(rows) < 500:
                return 0
            cursor = rows[-1].id
    finally:
        service.close()
