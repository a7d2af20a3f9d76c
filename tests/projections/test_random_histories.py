"""Random histories: the projection folded along the way == a rebuild from zero == as-of replay.

The histories are those of ``tests/domain/test_properties.py`` (two employees, their March
work items declared, approved, rejected, failed and delayed, adjustments proposed and
approved, assessments replaced, March closed, appeals filed, assigned and decided, with the
ledger's compensating facts), signed by the right actor or often the wrong one (refused, so
nothing is recorded). A close carries the snapshot the projection computes just before it.

Along the way the projection folds the log in small steps of random sizes, lagging behind
the head, a new ``Evaluations`` now and then resuming from the stored tracking position (as
a restarted runner does). At the end:

* every view equals what a rebuild from zero produces, and what folding the whole log again
  in one catch-up produces;
* each employee's March score and trace, replayed from the log at the head, equal the views';
* a close's recorded snapshot hash equals the one the views recompute (``matches``).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from domain.errors import Refusal
from ledger.config import parse_database
from projections.engine import Evaluations, next_close_snapshot, snapshot_hash
from projections.replay import Replay
from projections.runners import close_view, open_view, rebuild
from projections.score import Result
from tests.domain.test_properties import (
    END,
    PINNED,
    Story,
    command,
    fact_for,
    remember,
    setup_world,
)
from tests.domain.world import MARCH, World
from tests.projections.test_scores import all_views

# how far the projection folds after each accepted fact; 0: not at all; -1: a new projection
# resumes from the stored tracking position (a restarted runner)
fold_step = st.sampled_from((0, 0, 1, 1, 2, 3, 5, -1))


def tell(
    w: World, story: Story, ev: Evaluations, commands: list[tuple[Any, ...]], steps: list[int]
) -> Counter[str]:
    """Submit the commands, folding as ``steps`` says after each accepted one (cycling);
    returns the fact types accepted (derived ones too)."""
    accepted: Counter[str] = Counter()
    for cmd in commands:
        if cmd[0] == "tick":
            w.now = min(w.now + dt.timedelta(days=cmd[1]), END)
            continue
        who, fact_type, data = fact_for(cmd, story, w)
        if fact_type == "period.closed":  # the snapshot of the views just before the close
            ev.catch_up()
            data["snapshot"] = snapshot_hash(next_close_snapshot(ev.view, data["agency"], MARCH))
        outcome = w.service.submit_many([w.sign(who, fact_type, data)])[0]
        if isinstance(outcome, Refusal):
            continue
        remember(story, fact_type, who, data, outcome)
        step = steps[accepted.total() % len(steps)]
        accepted.update([fact_type, *(d.type for d in outcome.derived)])
        if step < 0:
            ev = Evaluations(ev.view)
        elif step:
            ev.catch_up(limit=step)
    ev.catch_up()
    return accepted


def score_and_trace(ev: Evaluations, employee: str) -> Result:
    key = f"{employee}/{MARCH}"
    score, trace = ev.view.doc("score", key), ev.view.doc("trace", key)
    assert score is not None and trace is not None, key
    return Result.from_doc(score, trace["trace"])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.one_of(st.just(PINNED), st.lists(command, min_size=20, max_size=45)),
    st.lists(fold_step, min_size=1, max_size=6),
)
def test_folded_rebuilt_and_replayed_agree(
    commands: list[tuple[Any, ...]], steps: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        w, story = setup_world(path)
        db = parse_database(f"sqlite:///{path}")
        view = open_view(db)
        try:
            ev = Evaluations(view)
            ev.catch_up(limit=3)  # the organisation, partly: the story starts with a lag
            accepted = tell(w, story, ev, commands, steps)
            for fact_type in sorted(accepted):
                event(f"accepted {fact_type}")
            folded = all_views(ev)
            assert ev.view.doc("pending", "evaluations") == {
                "dirty": [],
                "units": [],
                "years": [],
                "appeals": [],
            }
            # a rebuild from zero, and one catch-up over the whole log, give the same views
            assert rebuild(db) == w.service.sealed.log_size()
            assert all_views(ev) == folded
            view.clear()
            Evaluations(view).catch_up()
            assert all_views(ev) == folded
            # as-of at the head == the views, trace included
            replay = Replay(view)
            for employee in sorted({*story.owners.values()}):
                replayed = replay.score(employee, MARCH)
                stored = score_and_trace(ev, employee)
                assert replayed.to_doc() == stored.to_doc()
            # a close's recorded snapshot is the one the views recompute
            assert len(folded["snapshot"]) == accepted["period.closed"]
            for doc in folded["snapshot"].values():
                assert doc["matches"], (doc["recorded"], doc["computed"])
        finally:
            close_view(view)
            w.service.close()
