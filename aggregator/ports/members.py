"""Pods announce themselves with a heartbeat that expires (TTL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class MemberInfo:
    pod: str
    identity: str
    started_at: float
    heartbeat_at: float
    partitions: tuple[int, ...]
    events_per_s: float
    lag: int
    ready: bool


class MemberRegistry(Protocol):
    async def heartbeat(self, info: MemberInfo, ttl_s: float) -> None: ...

    async def members(self) -> list[MemberInfo]: ...

    async def leave(self, identity: str) -> None: ...
