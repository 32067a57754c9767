"""Time, injected: wall-clock for timestamps, monotonic for every duration.

``SystemClock`` is the real one; tests move a ``ManualClock``
(``adapters/memory/clock.py``) by hand.  ``wait_first`` is the one way to wait
for something with a time limit on an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock epoch seconds (timestamps shown to people, record times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; the only one used for expiry."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def wait_first(
    clock: Clock, seconds: float, *futures: asyncio.Future[Any]
) -> set[asyncio.Future[Any]]:
    """Wait until one of ``futures`` is done, or ``seconds`` have passed on
    ``clock``, whichever comes first.

    Returns the futures that are done when the wait ends: empty means the time
    ran out first.  A future that finished in the same instant counts as done.
    The futures are left as they are: the caller cancels what it no longer
    wants (and a cancelled wait cancels only its own timer).
    """
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({timer, *futures}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
    return {future for future in futures if future.done()}
