"""The reduce stage on the memory adapters: a bus outage costs snapshots, never
the reducer itself."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreServer
from aggregator.ports.bus import Published
from aggregator.ports.store import StoreUnavailable
from aggregator.services.reduce_stage import ReduceSettings, ReduceStage


class FlakyBus(MemoryBus):
    """A bus whose first ``failures`` publishes fail as an unreachable cluster does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, message: Published) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("bus unreachable")
        await super().publish(message)


async def test_a_failing_publish_is_counted_and_the_next_tick_publishes() -> None:
    clock = SystemClock()
    started = clock.time()
    bus = FlakyBus(failures=2)
    stage = ReduceStage(
        MemoryFeed(MemoryStoreServer(clock, ttl_s=600)),
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 0.05, 10),
        identity="pod_a",
        leading_epoch=lambda: 3,
    )
    task = asyncio.create_task(stage.run(3))
    try:
        async with asyncio.timeout(5):
            while stage.stats.published == 0:  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.02)
        assert stage.stats.publish_failures == 2
        assert not task.done()
        latest = await bus.latest()
        assert latest is not None
        assert latest.epoch == 3
        published = orjson.loads(latest.payload)
        assert published["leader"] == "pod_a"
        assert started <= published["leader_since"] <= published["generated_at"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
