"""The feed of entries (``GET /v1/feed``): one reader of the log per process, many subscribers.

A ``FeedHub`` is the process's one *source*: an asyncio task that reads each new page of the
log once and hands it to every *live* subscriber. It is woken by this process's own commits
(the sealer's ``on_commit``, as the proof cache learns of them), hands out at most one
partial page every ``gather`` seconds (under a stream of commits, one write to each
subscriber's socket then carries many: the sockets' cost is per write more than per byte),
and it looks at the log's size every ``poll`` seconds for what other processes write
(``serve --workers N``, ``kpi-ledger append``). With no live subscriber it reads nothing.

A ``Subscription`` starting behind the source's position reads the log's history page by
page on its own (a query per page, in a worker thread) until it reaches the source, then
joins it. A live subscriber has a bounded queue of pages (``queue_pages``); one that falls
that far behind (a slow client) is taken off the source, which never waits for it, and
reads on its own again from where it is, until it catches up. Every subscriber receives
every position exactly once and in order, whichever way it is fed.

A process holds at most ``max_subscribers`` subscriptions (``KPI_LEDGER_FEED_SUBSCRIBERS``,
default 256); past it ``subscribe`` raises ``FeedFull`` (a 503 ``feed.full`` problem). An open
subscription checks that its caller may still read the log every ``recheck_seconds`` (the
service's ``token_seconds``; the check is shared by the subscriptions of one token) and ends
with a final ``closed`` event when it may not (the token revoked, the role withdrawn). A token
revoked from another process is seen within about three times ``token_seconds`` (the token
table remembers a token that long, and a shared check's answer is kept that long); one
revoked through this process's ``Principals``, within about twice.

Damage is shown, never skipped: a position whose event row is gone, whose entry bytes no
longer hash to the leaf hash sealed for it (``signing.merkle.leaf_hash``), or which is
missing below the log's size, is a ``Damage`` in its place (``examine``): an ``event:
damaged`` in the feed, a ``{"damaged": {...}}`` line in ``GET /v1/entries``.

Events (Server-Sent Events)::

    id: 12
    event: entry
    data: <the entry's canonical bytes>

    id: 13
    event: damaged
    data: {"seq":13,"problem":"changed","detail":"..."}

    event: closed
    data: {"reason":"token_revoked","detail":"..."}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ledger.jobs import describe, iso
from ledger.sealer import SealedBatch
from ledger.store import LogRow, SealedLog
from signing.merkle import leaf_hash

log = logging.getLogger("kpi_ledger.feed")

PAGE = 500  # positions per read
POLL = 0.5  # seconds between looks at the log's size, for other processes' writes
GATHER = 0.5  # seconds between partial pages handed out: the feed's added latency at most
QUEUE_PAGES = 16  # pages a live subscriber may have waiting before it reads on its own again
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps the connection open
MAX_SUBSCRIBERS = 256
SUBSCRIBERS_ENV = "KPI_LEDGER_FEED_SUBSCRIBERS"
MIN_RECHECK = 0.1  # seconds: the shortest interval between checks of a subscriber's access

CHANGED = "changed"  # the same words as ``kpi-ledger verify``'s kinds (signing/verify.py)
DELETED = "deleted"


@dataclass(frozen=True)
class Damage:
    """A log position that cannot be shown as an entry, and why."""

    seq: int
    problem: str  # "changed" or "deleted"
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "problem": self.problem, "detail": self.detail}

    def json(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()


Shown = tuple[int, bytes | Damage]  # a position and its entry's bytes, or what is wrong there


def examine(rows: Iterable[LogRow], start: int, stop: int) -> list[Shown]:
    """Every position of ``[start, stop)`` in order, from the rows read for it: an entry's
    bytes when they hash to the leaf hash sealed for the position, a ``Damage`` otherwise. A
    position below ``stop`` without a row is damage (``stop`` must not exceed the log's size
    as read before the rows: every position below it was committed)."""
    shown: list[Shown] = []
    expected = start
    for row in rows:
        shown.extend((seq, _missing(seq)) for seq in range(expected, min(row.seq, stop)))
        if row.entry is None:
            shown.append((row.seq, Damage(row.seq, DELETED, "the entry's event row is missing")))
        elif leaf_hash(row.entry) != row.leaf_hash:
            detail = "the entry's bytes no longer hash to the leaf hash sealed for it"
            shown.append((row.seq, Damage(row.seq, CHANGED, detail)))
        else:
            shown.append((row.seq, row.entry))
        expected = row.seq + 1
    shown.extend((seq, _missing(seq)) for seq in range(expected, stop))
    return shown


def _missing(seq: int) -> Damage:
    return Damage(seq, DELETED, "the position is missing from the log's entries")


def read_shown(log: SealedLog, start: int, count: int) -> tuple[int, list[Shown]]:
    """The log's size and up to ``count`` positions from ``start``, examined."""
    size = log.log_size()
    stop = min(size, start + count)
    if stop <= start:
        return size, []
    return size, examine(log.read_rows(start, stop), start, stop)


def sse_event(seq: int, item: bytes | Damage) -> bytes:
    if isinstance(item, Damage):
        return b"id: %d\nevent: damaged\ndata: %s\n\n" % (seq, item.json())
    return b"id: %d\nevent: entry\ndata: %s\n\n" % (seq, item)


def closed_event(reason: str, detail: str) -> bytes:
    data = json.dumps({"reason": reason, "detail": detail}, separators=(",", ":"))
    return b"event: closed\ndata: %s\n\n" % data.encode()


UNREADABLE = closed_event("unavailable", "the log could not be read; reconnect with Last-Event-ID")


@dataclass(frozen=True)
class Page:
    """Consecutive positions ``[start, stop)`` as Server-Sent Events, formatted once."""

    start: int
    stop: int
    seqs: Sequence[int]
    events: Sequence[bytes]
    joined: bytes

    @classmethod
    def of(cls, start: int, shown: Sequence[Shown]) -> Page:
        events = [sse_event(seq, item) for seq, item in shown]
        stop = shown[-1][0] + 1 if shown else start
        return cls(start, stop, [seq for seq, _ in shown], events, b"".join(events))

    def take(self, at: int, most: int | None) -> tuple[bytes, int, int]:
        """The events from position ``at`` on, at most ``most`` of them: (bytes, how many,
        the position after the last one)."""
        first = 0 if at <= self.start else at - self.start
        last = len(self.events) if most is None else min(len(self.events), first + most)
        if first == 0 and last == len(self.events):
            return self.joined, last, self.stop
        if first >= last:
            return b"", 0, max(at, self.start)
        return b"".join(self.events[first:last]), last - first, self.seqs[last - 1] + 1


class FeedFull(Exception):
    """The process has as many feed subscribers as it allows."""

    def __init__(self, bound: int) -> None:
        super().__init__(f"{bound} feed subscribers are open")
        self.bound = bound


def subscribers_bound() -> int:
    """``KPI_LEDGER_FEED_SUBSCRIBERS``, else ``MAX_SUBSCRIBERS``."""
    raw = os.environ.get(SUBSCRIBERS_ENV, "").strip()
    if not raw:
        return MAX_SUBSCRIBERS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SUBSCRIBERS_ENV} must be a positive whole number, not {raw!r}")
    return int(raw)


Check = Callable[[], str | None]  # None: still allowed; otherwise the reason to end


class FeedHub:
    def __init__(
        self,
        log: SealedLog,
        *,
        max_subscribers: int = MAX_SUBSCRIBERS,
        page: int = PAGE,
        poll: float = POLL,
        gather: float = GATHER,
        queue_pages: int = QUEUE_PAGES,
        recheck_seconds: float = 2.0,
    ) -> None:
        self.log = log
        self.max_subscribers = max_subscribers
        self.page = page
        self.poll = poll
        self.gather = gather
        self.queue_pages = queue_pages
        self.recheck_seconds = max(recheck_seconds, MIN_RECHECK)
        self.subscribers: set[Subscription] = set()  # every open one (the bound counts them)
        self.live: set[Subscription] = set()  # those the source feeds
        self.head: int | None = None  # the next position the source reads
        self.pages_read = 0  # pages the source read (tests and the bench look)
        self.own_pages_read = 0  # pages subscribers read on their own
        self._wake = asyncio.Event()
        self._checks: dict[str, tuple[float, asyncio.Future[str | None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0  # times the source failed and was started again
        self.failed_at: float | None = None  # when it last failed (time.time())
        self.last_error: str | None = None

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._launch()
        self.log.sealer.on_commit.append(self._committed)

    def _launch(self) -> None:
        assert self._loop is not None
        self._task = self._loop.create_task(self._run(), name="feed-source")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The source never stops silently: a source that failed (a bug: reading errors are
        handled in the loop) is logged, its subscribers are told, and it is started again a
        second later; ``health()`` says so."""
        if self._stopping or task.cancelled():
            return
        error = task.exception()
        self.restarts += 1
        self.failed_at = time.time()
        self.last_error = describe(error) if error else "it returned"
        log.error(
            "the feed's source stopped (%s); starting it again", self.last_error, exc_info=error
        )
        for subscription in list(self.live):
            subscription.end(closed_event("failed", "the feed's source failed: reconnect"))
        self.live.clear()
        self.head = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(1.0, self._relaunch)

    def _relaunch(self) -> None:
        if not self._stopping:
            self._launch()

    def health(self) -> str:
        """``ok``, or how often the source had to be started again and why."""
        if not self.restarts:
            return "ok"
        at = iso(self.failed_at)
        return f"ok, restarted {self.restarts} times, last at {at} ({self.last_error})"

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.log.sealer.on_commit.remove(self._committed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subscription in list(self.subscribers):
            subscription.end(closed_event("shutdown", "the service is stopping"))

    def _committed(self, batch: SealedBatch) -> None:
        """The sealer's listener, in the writer's thread: wake the source (never raises)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._wake.set)

    # -- subscribers -----------------------------------------------------------------------
    def subscribe(self, at: int) -> Subscription:
        """A subscription from position ``at``; ``FeedFull`` past the bound."""
        if len(self.subscribers) >= self.max_subscribers:
            raise FeedFull(self.max_subscribers)
        subscription = Subscription(self, at)
        self.subscribers.add(subscription)
        return subscription

    def _join(self, subscription: Subscription, *, end: int | None = None) -> bool:
        """Put ``subscription`` on the source if it is at or past the source's position. With
        ``end`` (the log's size, which the subscription has reached) and the source idle, the
        source restarts there."""
        if self.head is None or not self.live:
            if end is None:
                return False
            self.head = min(subscription.at, end)
        elif subscription.at < self.head:
            return False
        self.live.add(subscription)
        self._wake.set()
        return True

    def _drop(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        self.live.discard(subscription)

    async def still_allowed(self, key: str, check: Check) -> str | None:
        """``check()`` (in a worker thread), shared by every subscription with the same
        ``key`` (a token) for ``recheck_seconds``: None, or the reason to end."""
        now = time.monotonic()
        known = self._checks.get(key)
        if known is None or known[0] <= now:
            if len(self._checks) > 2 * len(self.subscribers) + 16:
                self._checks = {k: v for k, v in self._checks.items() if v[0] > now}
            future = asyncio.ensure_future(asyncio.to_thread(check))
            known = (now + self.recheck_seconds, future)
            self._checks[key] = known
        return await asyncio.shield(known[1])

    async def read_page(self, at: int) -> tuple[int, Page]:
        """The log's size and the positions from ``at`` (up to a page), read in a worker
        thread."""
        size, shown = await asyncio.to_thread(read_shown, self.log, at, self.page)
        return size, Page.of(at, shown)

    # -- the source ------------------------------------------------------------------------
    async def _run(self) -> None:
        delivered = 0.0  # when the source last handed out a partial page
        while True:
            if not self.live:
                await self._wake.wait()
                self._wake.clear()
                continue
            start = self.head
            assert start is not None
            try:
                _size, page = await self.read_page(start)
            except Exception:
                log.exception("the feed could not read the log at %d", start)
                for subscription in list(self.live):
                    subscription.end(UNREADABLE)
                self.live.clear()
                continue
            self.pages_read += 1
            if self.head != start:  # every subscriber left and another restarted it
                continue
            if page.seqs:
                self.head = page.stop
                for subscription in list(self.live):
                    subscription.offer(page)
                if len(page.seqs) >= self.page:
                    continue  # more is waiting
                delivered = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
            # at most one partial page every ``gather`` seconds: under a stream of commits,
            # each delivery (a write to every subscriber's socket) carries many of them
            pause = delivered + self.gather - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)


class Subscription:
    """One open feed: where it is, and the pages the source has handed it."""

    def __init__(self, hub: FeedHub, at: int) -> None:
        self.hub = hub
        self.at = at  # the next position to send
        self.pages: deque[Page] = deque()
        self._waiter: asyncio.Future[None] | None = None  # set while the stream waits
        self.behind = False  # taken off the source: read on its own from ``at``
        self.final: bytes | None = None  # a last event to send, then end

    def offer(self, page: Page) -> None:
        """From the source: queue ``page``, or, when the queue is full, leave the source."""
        if page.stop <= self.at:
            return
        if len(self.pages) >= self.hub.queue_pages:
            self.hub.live.discard(self)
            self.behind = True
        else:
            self.pages.append(page)
        self._wake()

    def end(self, final: bytes) -> None:
        self.final = final
        self.hub.live.discard(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, seconds: float) -> None:
        """Until the source offers a page or ends the stream, or ``seconds`` have passed (a
        future and a timer: cheaper than ``wait_for``, per page and subscriber)."""
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        self.hub._drop(self)
        self.pages.clear()

    async def events(
        self,
        *,
        limit: int | None = None,
        recheck: Callable[[], Awaitable[str | None]] | None = None,
        keepalive: float = KEEPALIVE,
    ) -> AsyncIterator[bytes]:
        """The stream's bytes: events from ``at`` on, ``limit`` of them at most; it ends when
        ``recheck`` gives a reason (after a ``closed`` event naming it)."""
        hub = self.hub
        left = limit
        clock = time.monotonic
        quiet_since = clock()
        next_check = clock() + hub.recheck_seconds
        try:
            while left is None or left > 0:
                if self.final is not None:
                    yield self.final
                    return
                now = clock()
                if recheck is not None and now >= next_check:
                    reason = await recheck()
                    if reason is not None:
                        yield closed_event(*_ending(reason))
                        return
                    next_check = clock() + hub.recheck_seconds
                if self.pages:
                    chunk, count, self.at = self.pages.popleft().take(self.at, left)
                elif self in hub.live:
                    await self._wait(min(next_check, quiet_since + keepalive) - clock())
                    if not self.pages and self.final is None and clock() >= quiet_since + keepalive:
                        quiet_since = clock()
                        yield b": keep-alive\n\n"
                    continue
                elif hub._join(self):
                    continue
                else:
                    chunk, count, size = await self._read_own(left)
                    if count == 0 and self.final is None and not hub._join(self, end=size):
                        await asyncio.sleep(hub.poll)  # the log is below the source: wait
                if count:
                    quiet_since = clock()
                    if left is not None:
                        left -= count
                    yield chunk
        finally:
            self.close()

    async def _read_own(self, left: int | None) -> tuple[bytes, int, int]:
        """The next page read on its own: (bytes, how many events, the log's size)."""
        self.behind = False
        try:
            size, page = await self.hub.read_page(self.at)
        except Exception:
            log.exception("a feed subscriber could not read the log at %d", self.at)
            self.end(UNREADABLE)
            return b"", 0, 0
        self.hub.own_pages_read += 1
        chunk, count, self.at = page.take(self.at, left)
        return chunk, count, size


_ENDINGS = {
    "token_revoked": "the token is unknown or was revoked",
    "access_revoked": "the caller no longer reads the log's entries",
    "unavailable": "the caller's access could not be checked; reconnect with Last-Event-ID",
}


def _ending(reason: str) -> tuple[str, str]:
    return reason, _ENDINGS.get(reason, reason)


class FeedResponse(StreamingResponse):
    """A subscription's stream, which releases the subscription however the stream ends
    (the client gone, the service stopping)."""

    def __init__(
        self, subscription: Subscription, content: AsyncIterator[bytes], headers: dict[str, str]
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.subscription = subscription
        self.content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()
            closer = getattr(self.content, "aclose", None)
            if closer is not None:
                with contextlib.suppress(RuntimeError):
                    await closer()
