"""Runners: read-your-writes, one writer per projection, resuming after a restart."""

from __future__ import annotations

import time

import pytest

from ledger.config import parse_database
from projections import runners
from tests.domain.test_scenarios import ordinary_month
from tests.domain.world import LAN, MARCH, World


def test_a_runner_follows_the_log_alone_and_resumes(db_url: str) -> None:
    w = World(db_url)
    w.organise()
    w.employ(LAN)
    database = parse_database(db_url)
    runner = runners.start_runner(database, interval=0.05)
    try:
        with pytest.raises(runners.RunnerBusy):
            runners.CatchUpRunner(database)  # a second writer is refused
        m = ordinary_month(w)
        assert runner.wait_for(m.assessed.seq, timeout=20)
        doc = runner.engine.view.doc("score", f"{LAN}/{MARCH}")
        assert doc is not None and doc["total"] == "1073/12"
    finally:
        runner.stop()
    extra = w.do("tuan.sup", "work.delayed", {"item": "lan-03-10", "days": 1, "reason": "r"})
    again = runners.start_runner(database, interval=0.05)  # the lock was released; resumes
    try:
        assert again.engine.seq >= m.assessed.seq  # from its tracking position, not from zero
        assert again.wait_for(extra.seq, timeout=20)
        doc = again.engine.view.doc("score", f"{LAN}/{MARCH}")
        assert (
            doc is not None and doc["total"] == "4285/48"
        )  # one more delay: P -0.625, T -70 x 0.625/300 = -7/48
    finally:
        again.stop()
        w.service.close()


def test_the_subscription_delivers_without_polling(pg_url: str) -> None:
    """PostgreSQL: with the catch-up tick out of the way (an hour apart), new entries reach
    the projection through the library's subscription alone."""
    w = World(pg_url)
    w.organise()
    w.employ(LAN)
    runner = runners.SubscriptionRunner(parse_database(pg_url), interval=3600)
    try:
        m = ordinary_month(w)
        expected = m.assessed.seq - runner.engine.seq
        deadline = time.monotonic() + 20
        while runner.projection.pending < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.projection.pending == expected  # buffered, not yet committed
        runner.projection.flush()
        assert runner.engine.seq == m.assessed.seq
        doc = runner.engine.view.doc("score", f"{LAN}/{MARCH}")
        assert doc is not None and doc["total"] == "1073/12"
    finally:
        runner.stop()
        w.service.close()
