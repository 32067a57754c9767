"""A clock that tests move by hand (and the system's, from the clock port)."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from aggregator.ports.clock import SystemClock

__all__ = ["ManualClock", "SystemClock"]


class ManualClock:
    """Time moves only through ``advance``; sleepers wake in deadline order.

    ``advance`` lets every runnable task run between wake-ups, so a test reads
    like a timeline: ``await clock.advance(15)`` runs all that 15 s would run.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall_offset = start
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._wall_offset + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def settle(self) -> None:
        """Let every task that can run, run (several loop turns)."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (NTP step); monotonic time is unaffected."""
        self._wall_offset += seconds
