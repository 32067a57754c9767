"""Member heartbeats (every pod) and the log line when the member list changes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aggregator.ports.clock import Clock
from aggregator.ports.members import MemberInfo, MemberRegistry


class Membership:
    def __init__(
        self,
        registry: MemberRegistry,
        clock: Clock,
        describe: Callable[[], Awaitable[MemberInfo]],
        *,
        interval_s: float = 2.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._describe = describe
        self._interval = interval_s
        self._log = logger or logging.getLogger("aggregator.members")
        self.members: list[MemberInfo] = []
        self._names: list[str] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except ConnectionError as error:
                self._log.warning("member heartbeat failed: %s", error)
            except Exception:
                # A heartbeat is best effort: never let it take the pod down.
                self._log.exception("member heartbeat failed unexpectedly")
            await self._clock.sleep(self._interval)

    async def beat(self) -> None:
        await self._registry.heartbeat(await self._describe(), ttl_s=3 * self._interval)
        self.members = await self._registry.members()
        names = sorted(member.identity for member in self.members)
        if names != self._names:
            self._log.info("The list of cluster members has changed: %s", names)
            self._names = names

    async def leave(self, identity: str) -> None:
        try:
            await self._registry.leave(identity)
        except ConnectionError as error:
            self._log.warning("could not leave the member list: %s", error)
