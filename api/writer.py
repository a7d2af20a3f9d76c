"""Group commit: concurrent writes recorded together.

Every write request hands its envelopes (with its screen: signed by the caller, of the
endpoint's family) to one writer thread and waits. The writer takes everything waiting, up to
``MAX_BATCH`` envelopes, and records it as one ``submit_many`` batch: one transaction and one
sync to disk for all of them, each fact still accepted or refused on its own, in arrival
order. Sixteen clients each writing one fact cost one commit instead of sixteen. A request
whose batch fails (the database went away) gets the error; the others in that batch too,
since none of it was recorded.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from domain.errors import Refusal
from domain.service import MAX_BATCH, LedgerService, Outcome, Screen
from signing.facts import Fact

Intake = bytes | Fact | Refusal  # an envelope, or what LedgerService.precheck made of it


class _Request:
    def __init__(self, envelopes: Sequence[Intake], screen: Screen | None) -> None:
        self.envelopes = list(envelopes)
        self.screen = screen
        self.done: Future[list[Outcome]] = Future()


class GroupWriter:
    def __init__(self, service: LedgerService) -> None:
        self.service = service
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-writer", daemon=True)
        self._thread.start()

    def submit(self, envelopes: Sequence[Intake], screen: Screen | None = None) -> list[Outcome]:
        """Record ``envelopes`` (with the others waiting); blocks until they are answered."""
        return self._enqueue(envelopes, screen).result()

    async def submit_async(
        self, envelopes: Sequence[Intake], screen: Screen | None = None
    ) -> list[Outcome]:
        """The same from a coroutine: the request waits on the event loop, holding no thread
        of the pool, while the writer thread records its group."""
        return await asyncio.wrap_future(self._enqueue(envelopes, screen))

    def _enqueue(self, envelopes: Sequence[Intake], screen: Screen | None) -> Future[list[Outcome]]:
        if len(envelopes) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} envelopes per request")
        request = _Request(envelopes, screen)
        self._queue.put(request)
        return request.done

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        carried: _Request | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is None:
                return
            group, size = [first], len(first.envelopes)
            while size < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                if size + len(more.envelopes) > MAX_BATCH:
                    carried = more  # the next group's first
                    break
                group.append(more)
                size += len(more.envelopes)
            self._write(group)

    def _write(self, group: list[_Request]) -> None:
        envelopes = [e for r in group for e in r.envelopes]
        screens = [r.screen for r in group for _ in r.envelopes]
        try:
            outcomes = self.service.submit_many(envelopes, screen=screens)
        except BaseException as exc:  # WriteFailed says what was recorded; the group shares it
            for request in group:
                request.done.set_exception(exc)
            return
        at = 0
        for request in group:
            request.done.set_result(outcomes[at : at + len(request.envelopes)])
            at += len(request.envelopes)
