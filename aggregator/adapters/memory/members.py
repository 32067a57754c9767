"""Member heartbeats in memory, expiring on the injected clock."""

from __future__ import annotations

from aggregator.ports.clock import Clock
from aggregator.ports.members import MemberInfo


class MemoryMembers:
    """Implements ``MemberRegistry``; shared by every simulated pod."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._members: dict[str, tuple[MemberInfo, float]] = {}

    async def heartbeat(self, info: MemberInfo, ttl_s: float) -> None:
        self._members[info.identity] = (info, self._clock.monotonic() + ttl_s)

    async def members(self) -> list[MemberInfo]:
        now = self._clock.monotonic()
        for identity in [i for i, (_, until) in self._members.items() if until <= now]:
            del self._members[identity]
        return sorted((info for info, _ in self._members.values()), key=lambda m: m.pod)

    async def leave(self, identity: str) -> None:
        self._members.pop(identity, None)
