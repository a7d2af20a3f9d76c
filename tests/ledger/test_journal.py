"""The refusal journal (``ledger/journal.py``): what the service writes there, and what not.

On SQLite and PostgreSQL: a self-approval refused through the service is journaled with its
rule, its actor as signed, the envelope's hash and the ledger's time; an accepted fact, a
duplicate answered with its first result and a batch that failed as a whole are not; a
journal that cannot be written (its table dropped) leaves the refusal's answer as it was;
the self-approval-attempt flag needs the threshold's count in one month and names the
attempts; pruning removes what is older than the date it is given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from domain.errors import Refusal, WriteFailed
from ledger.journal import (
    FLAG_KIND,
    MAX_DETAIL,
    SELF_APPROVAL,
    SELF_APPROVAL_ATTEMPTS,
    Journal,
    Refused,
)
from tests.domain.world import LAN, World, assignment, at


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    world = World(db_url)
    world.organise()
    world.employ(LAN)
    world.now = at("2026-03-02")
    world.do("tuan.sup", "work.assigned", assignment("i-1"))
    world.do(LAN, "work.declared", {"item": "i-1", "done_at": "2026-03-01T03:00:00Z"})
    yield world
    world.service.close()


def journal(w: World) -> Journal:
    return w.service.journal


def test_a_refused_self_approval_is_journaled(w: World) -> None:
    before = journal(w).page()
    raw = w.sign(LAN, "work.approved", {"item": "i-1"})
    refusal = w.refused_raw(raw, SELF_APPROVAL)
    [row, *older] = journal(w).page()
    assert [r.id for r in older] == [r.id for r in before]
    assert (row.rule, row.actor, row.fact_type) == (SELF_APPROVAL, LAN, "work.approved")
    assert row.fact_sha256 == hashlib.sha256(raw).hexdigest()
    assert row.recorded_at == "2026-03-02T03:00:00.000000Z"  # the ledger's clock
    assert row.claimed_at is not None and row.claimed_at.startswith("2026-03-02T03:00:00")
    assert row.detail == refusal.detail  # the refusal's words, as answered
    # filters
    assert [r.id for r in journal(w).page(actor=LAN, rule=SELF_APPROVAL)] == [row.id]
    assert journal(w).page(actor="tuan.sup") == []
    assert journal(w).page(since=dt.datetime(2026, 3, 3, tzinfo=dt.UTC)) == []


def test_accepted_facts_and_duplicates_are_not_journaled(w: World) -> None:
    count = len(journal(w).page(limit=1000))
    envelope = w.sign("tuan.sup", "work.approved", {"item": "i-1"})
    first = w.service.submit(envelope)
    again = w.service.submit(envelope)  # the same envelope: its first result
    assert again.duplicate and again.seq == first.seq
    # in one batch: the same envelope twice, and an accepted fact
    other = w.sign("tuan.sup", "work.assigned", assignment("i-2"))
    outcomes = w.service.submit_many([other, other])
    assert not any(isinstance(o, Refusal) for o in outcomes)
    assert len(journal(w).page(limit=1000)) == count
    # a refusal in a batch is journaled once, beside accepted facts that are not
    refused = w.sign(LAN, "work.approved", {"item": "i-2"})
    third = w.sign("tuan.sup", "work.assigned", assignment("i-3"))
    outcomes = w.service.submit_many([third, refused])
    assert isinstance(outcomes[1], Refusal) and not isinstance(outcomes[0], Refusal)
    rows = journal(w).page(limit=1000)
    assert len(rows) == count + 1
    assert rows[0].fact_sha256 == hashlib.sha256(refused).hexdigest()


def test_an_unreadable_envelope_is_journaled_without_an_actor(w: World) -> None:
    raw = b'{"payloadType": "nonsense"}'
    w.refused_raw(raw, "envelope.malformed")
    row = journal(w).page()[0]
    assert row.rule == "envelope.malformed" and row.actor is None
    assert row.fact_sha256 == hashlib.sha256(raw).hexdigest()


def test_a_failed_batch_is_not_journaled(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    count = len(journal(w).page(limit=1000))
    refused = w.sign(LAN, "work.approved", {"item": "i-1"})

    def broken() -> int:
        raise OSError("the database is away")

    monkeypatch.setattr(w.service.sealed, "log_size", broken)
    with pytest.raises(WriteFailed):
        w.service.submit_many([refused])
    monkeypatch.undo()
    assert len(journal(w).page(limit=1000)) == count


def test_a_journal_that_cannot_be_written_leaves_the_refusal_as_it_was(
    w: World, caplog: pytest.LogCaptureFixture
) -> None:
    journal(w).page()  # the table exists
    with w.service.sealed.datastore.transaction(commit=True) as c:  # type: ignore[attr-defined]
        c.execute(f"DROP TABLE {journal(w).table}")
    journal(w)._created = True  # as a process that created it before someone dropped it
    raw = w.sign(LAN, "work.approved", {"item": "i-1"})
    size = w.service.sealed.log_size()
    with caplog.at_level(logging.WARNING, logger="ledger.journal"):
        outcome = w.service.submit_many([raw])[0]
    assert isinstance(outcome, Refusal) and outcome.rule == SELF_APPROVAL
    assert w.service.sealed.log_size() == size
    assert any("not journaled" in r.getMessage() for r in caplog.records)
    # the next refusal creates the table again and is journaled
    w.refused(LAN, "work.approved", {"item": "i-1"}, SELF_APPROVAL)
    assert [r.actor for r in journal(w).page()] == [LAN]


def test_the_attempts_flag_needs_the_threshold_in_one_month(w: World) -> None:
    for n in range(SELF_APPROVAL_ATTEMPTS - 1):
        w.now = at("2026-03-02") + dt.timedelta(minutes=n)
        w.refused(LAN, "work.approved", {"item": "i-1"}, SELF_APPROVAL)
    w.refused(LAN, "work.unknown_kind", {"item": "i-1"}, "fact.unknown_type")  # another rule
    assert journal(w).attempts() == []
    w.now = at("2026-04-02")  # another month: not the same period
    w.refused(LAN, "work.approved", {"item": "i-1"}, SELF_APPROVAL)
    assert journal(w).attempts() == []
    w.now = at("2026-03-20")
    w.refused(LAN, "work.approved", {"item": "i-1"}, SELF_APPROVAL)
    [flag] = journal(w).attempts()
    march = [r for r in journal(w).page(rule=SELF_APPROVAL) if r.recorded_at < "2026-04"]
    assert (flag.actor, flag.period, flag.count) == (LAN, "2026-03", SELF_APPROVAL_ATTEMPTS)
    assert [r.id for r in flag.refusals] == sorted(r.id for r in march)
    doc = flag.as_dict()
    assert doc["source"] == "journal" and doc["kind"] == FLAG_KIND
    assert doc["subject"] == f"{LAN}/2026-03" and len(doc["refusals"]) == SELF_APPROVAL_ATTEMPTS
    assert journal(w).attempts(actor="tuan.sup") == []


def test_what_a_caller_can_make_it_store_is_bounded_and_can_be_pruned(w: World) -> None:
    row = Refused.of(b"x" * 10_000, "fact.invalid", "d" * 10_000, "a" * 1_000, "t" * 1_000)
    assert len(row.detail) == MAX_DETAIL and row.actor is not None and len(row.actor) < 1_000
    assert journal(w).record([row], at("2026-01-01"))
    w.refused(LAN, "work.approved", {"item": "i-1"}, SELF_APPROVAL)
    assert journal(w).prune(at("2026-02-01")) == 1
    assert [r.actor for r in journal(w).page()] == [LAN]


def test_the_same_envelope_again_is_one_attempt(w: World) -> None:
    """A refused envelope sent again (a retry, or anyone resubmitting what the actor once
    signed) is journaled each time but counts once towards the flag."""
    raw = w.sign(LAN, "work.approved", {"item": "i-1"})
    for _ in range(SELF_APPROVAL_ATTEMPTS + 1):
        w.refused_raw(raw, SELF_APPROVAL)
    assert len(journal(w).page(rule=SELF_APPROVAL)) == SELF_APPROVAL_ATTEMPTS + 1
    assert journal(w).attempts() == []


def test_a_refusal_by_the_submitters_screen_is_not_journaled(w: World) -> None:
    """The HTTP API's screen (is the fact signed by the caller?) and a command's own
    condition run before the signature is checked: what they refuse is no attempt of the
    actor the envelope names, and the journal would misattribute it."""
    before = journal(w).page()

    def not_yours(fact: Any) -> None:
        raise Refusal("the fact is not signed by the caller", rule="principal.not_the_actor")

    raw = w.sign(LAN, "work.approved", {"item": "i-1"})
    [outcome] = w.service.submit_many([raw], screen=not_yours)
    assert isinstance(outcome, Refusal) and outcome.rule == "principal.not_the_actor"
    assert journal(w).page() == before
