"""Waiting for something that happens in another thread or process, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(
    condition: Callable[[], bool],
    seconds: float = 15.0,
    *,
    every: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> bool:
    """Whether ``condition()`` becomes true within ``seconds`` (asked every ``every``
    seconds; an exception of a ``tolerate`` type counts as not yet). The last look is taken
    after the deadline, so a slow machine is told the truth, not a timeout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except tolerate:
            pass
        time.sleep(every)
    return condition()
