"""Snapshot fan-out in memory: the latest snapshot and synchronous delivery."""

from __future__ import annotations

from collections.abc import Callable

from aggregator.ports.bus import Published


class MemoryBus:
    """Implements ``SnapshotBus``; shared by every simulated pod."""

    def __init__(self) -> None:
        self._latest: Published | None = None
        self._subscribers: dict[int, Callable[[Published], None]] = {}
        self._next = 0
        self.published = 0

    async def publish(self, message: Published) -> None:
        self.published += 1
        self._latest = message
        for deliver in list(self._subscribers.values()):
            deliver(message)

    async def latest(self) -> Published | None:
        return self._latest

    async def subscribe(self, deliver: Callable[[Published], None]) -> _MemorySubscription:
        self._next += 1
        self._subscribers[self._next] = deliver
        return _MemorySubscription(self, self._next)

    def unsubscribe(self, token: int) -> None:
        self._subscribers.pop(token, None)


class _MemorySubscription:
    def __init__(self, bus: MemoryBus, token: int) -> None:
        self._bus = bus
        self._token = token

    async def close(self) -> None:
        self._bus.unsubscribe(self._token)
