"""The feed (``GET /v1/feed``, ``api/feed.py``): one reader of the log per process, fanned out.

Over real sockets (uvicorn in a thread): many subscribers from different positions each get
every position exactly once and in order, while the log grows through this process's writer
and through another ledger instance (another process's writes, seen by the slow poll), and
those that keep up are fed by the one source without a read of their own; ``Last-Event-ID``
resumes; past the bound a 503 ``feed.full``; a revoked token or role ends the stream. On the
hub itself: a slow subscriber is taken off the source and catches up on its own; a damaged
row is shown in its place, by the feed and by ``/v1/entries``, on both backends.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import Ledger
from fastapi.testclient import TestClient

from api.app import create_app
from api.feed import FeedHub, Subscription
from api.runtime import Runtime, Settings
from domain.service import LedgerService, TimeWindow
from ledger.config import parse_database
from ledger.home import LedgerHome
from tests.api.live import Connection, Event, parse_events, served
from tests.domain.world import World


def _settings(url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(parse_database(url), LedgerHome(tmp_path / "no-home"), projections=False, **kw)


def _attest(w: World, start: int, n: int) -> list[bytes]:
    return [
        w.sign("lan", "document.attested", {"sha256": f"{start + i:064x}", "title": f"Hồ sơ {i}"})
        for i in range(n)
    ]


@dataclass
class Follower:
    """A feed read over its own connection, in a thread, until the stream ends."""

    host: str
    port: int
    token: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    status: int | None = None
    refusal: dict[str, Any] | None = None
    streaming: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Follower:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with Connection(self.host, self.port, timeout=60) as conn:
                conn.send(
                    "GET",
                    f"/v1/feed?{self.query}",
                    {"Authorization": f"Bearer {self.token}", **self.headers},
                )
                self.status, headers = conn.head()
                self.streaming.set()
                if self.status != 200:
                    self.refusal = json.loads(conn.body(headers))
                    return
                rest = b""
                for chunk in conn.chunks():
                    found, rest = parse_events(rest + chunk)
                    self.events.extend(found)
        except BaseException as exc:
            self.error = exc
        finally:
            self.streaming.set()

    def join(self, timeout: float = 60) -> Follower:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the feed {self.query} did not end"
        assert self.error is None, self.error
        return self


def _wait(condition: Any, timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


# -- many subscribers, one reader ---------------------------------------------------------------


def test_many_subscribers_get_every_position_once_in_order(db_url: str, tmp_path: Path) -> None:
    w = World(db_url)
    other: LedgerService | None = None
    try:
        w.person("lan")
        w.service.submit_many(_attest(w, 0, 40))
        app = create_app(
            _settings(db_url, tmp_path), runtime=lambda s: Runtime.open(s, service=w.service)
        )
        with served(app) as (host, port):
            rt: Runtime = app.state.runtime
            hub: FeedHub = app.state.feed
            hub.page = 7  # history in several pages
            token = rt.principals.issue("admin")
            size = w.service.sealed.log_size()
            by_http, by_other = 30, 25
            final = size + by_http + by_other
            starts = [0, 0, 3, 13, size - 1, size, size, size + 4]
            followers = [
                Follower(host, port, token, f"from={s}&limit={final - s}").start() for s in starts
            ]
            resumed = [  # Last-Event-ID wins over ``from``
                Follower(
                    host, port, token, f"from=0&limit={final - s - 1}", {"Last-Event-ID": str(s)}
                ).start()
                for s in (5, size - 1)
            ]
            everyone = followers + resumed
            for f in everyone:
                assert f.streaming.wait(20) and f.status == 200, (f.status, f.error)
            # those from the past read their history on their own, then join the source
            _wait(lambda: len(hub.live) == len(everyone), what="every subscriber on the source")
            own_reads, source_reads = hub.own_pages_read, hub.pages_read
            # this process's writes (commits wake the source) ...
            lan = rt.principals.issue("lan")
            with Connection(host, port) as conn:
                for at in range(0, by_http, 10):
                    batch = [json.loads(e) for e in _attest(w, 100 + at, 10)]
                    answer = conn.request(
                        "POST",
                        "/v1/batch",
                        {"Authorization": f"Bearer {lan}", "Content-Type": "application/json"},
                        json.dumps({"envelopes": batch}).encode(),
                    )
                    assert answer.status == 200 and answer.json()["accepted"] == 10, answer
            # ... and another instance's (another process: seen by the slow poll)
            other = LedgerService(
                parse_database(db_url), clock=lambda: w.now, window=TimeWindow(past=None)
            )
            other.submit_many(_attest(w, 200, by_other))
            for f in everyone:
                f.join()
            log = w.log_bytes()
            assert len(log) == final
            for f, start in zip(everyone, [*starts, 6, size], strict=True):
                assert [e.id for e in f.events] == list(range(start, final)), f.query
                for e in f.events:
                    assert e.event == "entry" and e.id is not None and e.data == log[e.id]
            # every subscriber kept up: the new positions came from the source alone, read once
            assert hub.own_pages_read == own_reads
            assert hub.pages_read - source_reads <= by_http + by_other
            _wait(lambda: not hub.subscribers, what="the subscriptions released")
    finally:
        if other is not None:
            other.close()
        w.service.close()


def test_past_the_bound_a_503_until_a_feed_closes(sqlite_url: str, tmp_path: Path) -> None:
    w = World(sqlite_url)
    try:
        app = create_app(
            _settings(sqlite_url, tmp_path),
            runtime=lambda s: Runtime.open(s, service=w.service),
            feed_subscribers=2,
        )
        with served(app) as (host, port):
            rt: Runtime = app.state.runtime
            hub: FeedHub = app.state.feed
            auth = {"Authorization": f"Bearer {rt.principals.issue('admin')}"}
            open_feeds = [Connection(host, port) for _ in range(2)]
            for conn in open_feeds:
                conn.send("GET", "/v1/feed?from=0", auth)
                assert conn.head()[0] == 200
            with Connection(host, port) as third:
                refused = third.request("GET", "/v1/feed", auth)
                assert refused.status == 503, refused
                doc = refused.json()
                assert doc["rule"] == "feed.full" and "2 feeds" in doc["detail"]
                assert refused.headers["retry-after"].isdigit()
                # the connection stays usable, and the rest of the service answers
                assert third.request("GET", "/v1/entries?limit=1", auth).status == 200
            open_feeds.pop().close()
            _wait(lambda: len(hub.subscribers) == 1, what="the closed feed released")
            with Connection(host, port) as again:
                again.send("GET", "/v1/feed?from=0&limit=1", auth)
                assert again.head()[0] == 200
                events, _ = parse_events(b"".join(again.chunks()))
                assert [e.id for e in events] == [0]
            for conn in open_feeds:
                conn.close()
    finally:
        w.service.close()


def test_a_revoked_token_or_role_ends_an_open_feed(sqlite_url: str, tmp_path: Path) -> None:
    w = World(sqlite_url)
    try:
        w.organise()
        app = create_app(
            _settings(sqlite_url, tmp_path, token_seconds=0.2),
            runtime=lambda s: Runtime.open(s, service=w.service),
        )
        with served(app) as (host, port):
            rt: Runtime = app.state.runtime
            size = w.service.sealed.log_size()
            by_token = Follower(host, port, rt.principals.issue("admin"), f"from={size - 2}")
            by_role = Follower(host, port, rt.principals.issue("binh.insp"), f"from={size - 2}")
            kept = Follower(host, port, rt.principals.issue("oss.system"), "from=0")  # no reader
            for f in (by_token, by_role, kept):
                f.start()
                assert f.streaming.wait(20)
            kept.join()
            assert kept.status == 403 and kept.refusal is not None
            assert kept.refusal["rule"] == "auth.forbidden"
            _wait(lambda: len(by_token.events) == len(by_role.events) == 2, what="two entries")
            time.sleep(0.5)  # several checks pass while the token and the role are in force
            assert by_token.thread and by_token.thread.is_alive()
            assert by_role.thread and by_role.thread.is_alive()
            began = time.monotonic()
            assert rt.principals.revoke("admin")
            w.do(
                "admin",
                "role.revoked",
                {"principal": "binh.insp", "role": "inspector", "unit": "KH"},
            )
            by_token.join(10)
            by_role.join(10)
            assert time.monotonic() - began < 5
            for f, reason in ((by_token, "token_revoked"), (by_role, "access_revoked")):
                last = f.events[-1]
                assert last.event == "closed" and last.id is None
                assert json.loads(last.data)["reason"] == reason, last
                assert [e.id for e in f.events[:2]] == [size - 2, size - 1]
    finally:
        w.service.close()


# -- the hub on its own ------------------------------------------------------------------------


async def _take(events: AsyncIterator[bytes], sub: Subscription, count: int) -> list[Event]:
    """Events from ``events`` until ``count`` positions have come (the stream has a limit)."""
    got: list[Event] = []
    rest = b""
    async for chunk in events:
        found, rest = parse_events(rest + chunk)
        got.extend(found)
    assert len(got) == count, (len(got), count)
    return got


def test_a_slow_subscriber_reads_on_its_own_and_misses_nothing(ledger: Ledger) -> None:
    log = ledger.service.sealed

    async def scenario() -> None:
        hub = FeedHub(log, page=4, queue_pages=2, gather=0, poll=0.05)
        await hub.start()
        try:
            head = log.log_size()
            written = 40
            fast, slow = hub.subscribe(head), hub.subscribe(head)
            fast_events = fast.events(limit=written)
            slow_events = slow.events(limit=written)
            fast_task = asyncio.ensure_future(_take(fast_events, fast, written))
            first = asyncio.ensure_future(slow_events.__anext__())  # joins, then stops reading
            while len(hub.live) < 2:
                await asyncio.sleep(0.01)
            for at in range(0, written, 4):  # ten commits, each a page of the source
                await asyncio.to_thread(ledger.attest, "lan", 4, start=at)
                await asyncio.sleep(0.03)
            fast_got = await asyncio.wait_for(fast_task, 20)
            assert [e.id for e in fast_got] == list(range(head, head + written))
            assert slow not in hub.live and slow.behind  # taken off the source: never waited for
            own_before = hub.own_pages_read
            chunks = [await first]
            chunks += [chunk async for chunk in slow_events]
            slow_got, _ = parse_events(b"".join(chunks))
            assert [e.id for e in slow_got] == list(range(head, head + written))
            assert hub.own_pages_read > own_before  # it caught up by reading on its own
            entries = {r.seq: r.entry for r in log.read_rows(head, head + written)}
            assert [e.data for e in slow_got] == [
                entries[seq] for seq in range(head, head + written)
            ]
            assert not hub.subscribers
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_a_subscriber_ahead_of_the_log_does_not_move_the_source_past_its_end(
    ledger: Ledger,
) -> None:
    log = ledger.service.sealed

    async def scenario() -> None:
        hub = FeedHub(log, gather=0, poll=0.05)
        await hub.start()
        try:
            head = log.log_size()
            ahead, at_end = hub.subscribe(head + 3), hub.subscribe(head)
            ahead_task = asyncio.ensure_future(_take(ahead.events(limit=2), ahead, 2))
            while ahead not in hub.live:  # first on the source, waiting for head + 3
                await asyncio.sleep(0.01)
            assert hub.head == head
            end_task = asyncio.ensure_future(_take(at_end.events(limit=5), at_end, 5))
            while at_end not in hub.live:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(ledger.attest, "lan", 5)
            got_ahead = await asyncio.wait_for(ahead_task, 20)
            got_end = await asyncio.wait_for(end_task, 20)
            assert [e.id for e in got_ahead] == [head + 3, head + 4]
            assert [e.id for e in got_end] == list(range(head, head + 5))
        finally:
            await hub.stop()

    asyncio.run(scenario())


# -- damage is shown -----------------------------------------------------------------------------


def _damage(ledger: Ledger, changed: int, no_event: int, no_position: int) -> None:
    """Alter one entry's event, delete another's, delete a third position's log row."""
    nid = _event_id(ledger, changed)
    state = bytes(
        ledger.sql(f"SELECT state FROM {ledger.events} WHERE {ledger.event_key()} = %s", (nid,))[0][
            0
        ]
    )
    altered = state.replace(b'"signatures"', b'"signatures" ', 1)
    assert altered != state
    ledger.sql(
        f"UPDATE {ledger.events} SET state = %s WHERE {ledger.event_key()} = %s", (altered, nid)
    )
    nid = _event_id(ledger, no_event)
    ledger.sql(f"DELETE FROM {ledger.events} WHERE {ledger.event_key()} = %s", (nid,))
    ledger.sql("DELETE FROM log_entries WHERE seq = %s", (no_position,))


def _event_id(ledger: Ledger, seq: int) -> int:
    return int(ledger.sql("SELECT notification_id FROM log_entries WHERE seq = %s", (seq,))[0][0])


def test_damaged_rows_are_shown_in_place(ledger: Ledger, tmp_path: Path) -> None:
    ledger.attest("lan", 10)
    log = ledger.service.sealed
    before = {r.seq: r.entry for r in log.read_rows()}
    size = len(before)
    ledger.checkpointer().checkpoint()  # sealed before the damage
    _damage(ledger, changed=4, no_event=6, no_position=8)
    damaged = {4: "changed", 6: "deleted", 8: "deleted"}
    app = create_app(
        _settings(ledger.database.url, tmp_path),
        runtime=lambda s: Runtime.open(s, service=ledger.service),
    )
    with TestClient(app) as client:
        rt: Runtime = app.state.runtime
        auth = {"Authorization": f"Bearer {rt.principals.issue('admin')}"}
        page = client.get("/v1/entries", headers=auth, params={"start": 0, "limit": 100})
        assert page.status_code == 200
        assert page.headers["x-log-damaged"] == "4,6,8"
        lines = page.content.split(b"\n")
        assert lines[-1] == b"" and len(lines) == size + 1
        for seq, line in enumerate(lines[:-1]):
            if seq in damaged:
                doc = json.loads(line)
                assert doc["damaged"]["seq"] == seq and doc["damaged"]["problem"] == damaged[seq]
                assert doc["damaged"]["detail"]
            else:
                assert line == before[seq]
        clean = client.get("/v1/entries", headers=auth, params={"start": 9, "limit": 2})
        assert "x-log-damaged" not in clean.headers
        assert clean.content == before[9] + b"\n" + before[10] + b"\n"
        for seq, problem in damaged.items():
            one = client.get(f"/v1/entries/{seq}", headers=auth)
            assert one.status_code == 409 and one.json()["rule"] == "log.damaged", one.text
            assert one.json()["damaged"]["problem"] == problem
        assert client.get(f"/v1/entries/{size}", headers=auth).status_code == 404
        # no receipt that its holder's check would fail: the damaged entries get none
        # (nor for 9, whose proof needs the leaf of the position deleted beside it)
        for seq in (4, 6, 9):
            refused = client.get(f"/v1/receipts/{seq}", headers=auth)
            assert refused.status_code == 409 and refused.json()["rule"] == "log.damaged"
        assert client.get("/v1/receipts/2", headers=auth).status_code == 200
        proof = client.get("/v1/proofs/inclusion", headers=auth, params={"index": 9, "size": 11})
        assert proof.status_code == 409 and proof.json()["rule"] == "log.damaged", proof.text
        feed = client.get("/v1/feed", headers=auth, params={"from": 2, "limit": size - 2})
        events, rest = parse_events(feed.content)
        assert rest == b""
        assert [e.id for e in events] == list(range(2, size))
        for e in events:
            assert e.id is not None
            if e.id in damaged:
                assert e.event == "damaged"
                assert json.loads(e.data)["problem"] == damaged[e.id]
            else:
                assert e.event == "entry" and e.data == before[e.id]


def test_the_source_shows_damage_in_new_rows(ledger: Ledger) -> None:
    """A live subscriber, fed by the source, gets a damaged row as such."""
    log = ledger.service.sealed
    other = LedgerService(ledger.database)  # another instance: its commits wake no one here

    async def scenario() -> list[Event]:
        hub = FeedHub(log, gather=0, poll=3600)  # the source reads only when woken
        await hub.start()
        try:
            head = log.log_size()
            sub = hub.subscribe(head)
            events = sub.events(limit=3)
            task = asyncio.ensure_future(_take(events, sub, 3))
            while sub not in hub.live:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            own = hub.own_pages_read
            from signing.facts import sign_fact

            envelopes = [
                sign_fact(
                    ledger.users["lan"], "document.attested", {"sha256": f"{i:064x}", "title": "t"}
                ).to_bytes()
                for i in range(3)
            ]
            await asyncio.to_thread(other.submit_many, envelopes)
            await asyncio.to_thread(_damage_one, ledger, head + 1)
            hub._committed(None)  # type: ignore[arg-type]  # as if this process had committed
            got = await asyncio.wait_for(task, 20)
            assert hub.own_pages_read == own
            return got
        finally:
            await hub.stop()

    try:
        got = asyncio.run(scenario())
    finally:
        other.close()
    assert [e.event for e in got] == ["entry", "damaged", "entry"]
    assert json.loads(got[1].data)["problem"] == "changed"


def _damage_one(ledger: Ledger, seq: int) -> None:
    nid = _event_id(ledger, seq)
    ledger.sql(
        f"UPDATE {ledger.events} SET state = %s WHERE {ledger.event_key()} = %s",
        (b'{"payload":"","payloadType":"x","signatures":[]}', nid),
    )


def test_a_failed_source_is_started_again_and_says_so(
    ledger: Ledger, monkeypatch: Any
) -> None:
    """A source that dies of a bug is not left dead: it is logged, its subscribers are told,
    it is started again a second later, and ``health()`` (``/v1/status``'s ``feed``) says how
    often and why."""
    log = ledger.service.sealed
    real_offer = Subscription.offer
    broken = [1]

    def offer(self: Subscription, page: Any) -> None:
        if broken:
            broken.pop()
            raise AssertionError("a bug in the source")
        real_offer(self, page)

    monkeypatch.setattr(Subscription, "offer", offer)

    async def scenario() -> tuple[str, list[Event]]:
        hub = FeedHub(log, gather=0, poll=0.05)
        await hub.start()
        try:
            head = log.log_size() - 2
            first = hub.subscribe(head)
            hub._join(first, end=log.log_size())  # on the source at once
            deadline = time.monotonic() + 10
            while hub.restarts == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            health = hub.health()
            await asyncio.sleep(1.2)  # started again
            again = hub.subscribe(head)
            got = await asyncio.wait_for(_take(again.events(limit=2), again, 2), 10)
            return health, got
        finally:
            await hub.stop()

    health, got = asyncio.run(scenario())
    assert health.startswith("ok, restarted 1 times") and "a bug in the source" in health
    assert [e.event for e in got] == ["entry", "entry"]
