"""``api/writer.py``: concurrent requests recorded together, each answered on its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.writer import GroupWriter
from domain.errors import Refusal
from domain.service import Appended
from signing.facts import Fact
from tests.domain.world import World


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    world = World(db_url)
    world.organise()
    yield world
    world.service.close()


def attest(w: World, who: str, n: int) -> bytes:
    return w.sign(who, "document.attested", {"sha256": f"{n:064x}", "title": f"t{n}"})


def test_concurrent_requests_share_batches_and_get_their_own_answers(w: World) -> None:
    writer = GroupWriter(w.service)
    calls: list[int] = []
    real = w.service.submit_many

    def counting(envelopes: Any, **kw: Any) -> Any:
        if not calls:
            time.sleep(0.3)  # a slow first commit: the other requests queue up behind it
        calls.append(len(envelopes))
        return real(envelopes, **kw)

    w.service.submit_many = counting  # type: ignore[method-assign]
    people = ["hoa.hr", "minh.hr", "tuan.sup", "an.rev", "binh.insp", "oss.system"]
    envelopes = [attest(w, people[i % len(people)], i) for i in range(60)]
    answers: dict[int, Any] = {}
    start = threading.Barrier(12)

    def client(k: int) -> None:
        start.wait()
        for i in range(k, 60, 12):
            answers[i] = writer.submit([envelopes[i]])[0]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    size = w.service.sealed.log_size()
    assert all(isinstance(a, Appended) and not a.duplicate for a in answers.values())
    assert sorted(a.seq for a in answers.values()) == list(range(size - 60, size))
    assert sum(calls) == 60 and max(calls) > 1  # requests written together
    for i, answer in answers.items():  # each answer is its own envelope's
        assert w.fact_at(answer.seq).data["title"] == f"t{i}"


def test_screens_and_duplicates_stay_per_request(w: World) -> None:
    writer = GroupWriter(w.service)
    mine = attest(w, "hoa.hr", 1)

    def only(name: str) -> Any:
        def screen(fact: Fact) -> None:
            if fact.actor != name:
                raise Refusal("not yours", rule="principal.not_the_actor")

        return screen

    first = writer.submit([mine, attest(w, "minh.hr", 2)], only("hoa.hr"))
    assert isinstance(first[0], Appended) and isinstance(first[1], Refusal)
    again = writer.submit([mine], only("hoa.hr"))[0]
    assert isinstance(again, Appended) and again.duplicate and again.seq == first[0].seq
    with pytest.raises(ValueError):
        writer.submit([mine] * 1001)
    writer.close()


def test_coroutines_wait_on_the_event_loop_and_share_batches(w: World) -> None:
    writer = GroupWriter(w.service)
    envelopes = [attest(w, "hoa.hr", 1000 + i) for i in range(40)]

    async def requests() -> list[Any]:
        answers = await asyncio.gather(*(writer.submit_async([e]) for e in envelopes))
        return [a[0] for a in answers]

    try:
        answers = asyncio.run(requests())
    finally:
        writer.close()
    assert all(isinstance(a, Appended) for a in answers)
    for i, answer in enumerate(answers):
        assert w.fact_at(answer.seq).data["title"] == f"t{1000 + i}"
