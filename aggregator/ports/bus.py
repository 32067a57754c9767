"""Snapshot fan-out: the leader publishes, every pod's hub receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Published:
    epoch: int
    leader: str
    generated_at: float
    payload: bytes
    """The snapshot as JSON (schema v1 plus live fields)."""


class Subscription(Protocol):
    async def close(self) -> None: ...


class SnapshotBus(Protocol):
    async def publish(self, message: Published) -> None:
        """Store as the latest snapshot and deliver to every subscriber."""
        ...

    async def latest(self) -> Published | None: ...

    async def subscribe(self, deliver: Callable[[Published], None]) -> Subscription:
        """``deliver`` is called on the event loop for every published snapshot."""
        ...
