"""The reduce stage on the memory adapters: a bus outage costs snapshots, never
the reducer itself; only the epoch the elector confirms is published."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator

import orjson
import pytest

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock, SystemClock
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreServer
from aggregator.core.partial import Partial
from aggregator.core.window import RollingWindow
from aggregator.ports.bus import Published
from aggregator.ports.store import PartialKey, StoreUnavailable
from aggregator.services.leading import StepDown
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


async def test_a_tick_publishes_only_while_the_elector_confirms_its_epoch() -> None:
    # The elector cancels a deposed leader's task, but a tick already under way
    # must not publish either: before every publish the stage asks the elector
    # for the epoch it still leads with (None once demoted or past the renew
    # deadline, another epoch once the lease was lost and won again).
    clock = ManualClock()
    bus = MemoryBus()
    confirmed: list[int | None] = [None]
    settings = ReduceSettings(("app",), 300, 1, 1.0, 10)
    stage = ReduceStage(
        MemoryFeed(MemoryStoreServer(clock, ttl_s=600)),
        bus,
        clock,
        settings,
        identity="pod_a",
        leading_epoch=lambda: confirmed[0],
    )
    window = RollingWindow(len(settings.dimension_names), 300, 1)

    for elector_says in (None, 4, 2):  # demoted, a newer term, an older one
        confirmed[0] = elector_says
        await stage.tick(window, 3)
    assert (bus.published, stage.stats.withheld, stage.stats.published) == (0, 3, 0)
    assert await bus.latest() is None
    assert stage.stats.ticks == 3  # the ticks ran; only their publishes were held back

    confirmed[0] = 3
    await stage.tick(window, 3)
    latest = await bus.latest()
    assert latest is not None
    assert latest.epoch == 3
    assert (bus.published, stage.stats.withheld, stage.stats.published) == (1, 3, 1)


def stalling_stage(feed: MemoryFeed, bus: MemoryBus, clock: ManualClock) -> ReduceStage:
    """A leader's reduce stage with a 1 s tick and a 5 s stall limit, epoch 3."""
    return ReduceStage(
        feed,
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10, stall_s=5.0),
        identity="pod_a",
        leading_epoch=lambda: 3,
    )


class DeadFeed(MemoryFeed):
    """A feed whose store stops answering once ``cut`` is set."""

    cut = False

    async def changes(self) -> list[tuple[PartialKey, Partial]]:
        if self.cut:
            raise StoreUnavailable("store unreachable")
        return list(await super().changes())


async def test_a_leader_that_cannot_publish_for_the_stall_limit_steps_down() -> None:
    clock = ManualClock()
    bus = FlakyBus(failures=0)
    feed = DeadFeed(MemoryStoreServer(clock, ttl_s=600))
    stage = stalling_stage(feed, bus, clock)
    task = asyncio.create_task(stage.run(3))
    await clock.advance(3.0)
    assert stage.stats.published >= 3
    bus.failures = 2  # two failed publishes: under the limit, the term goes on
    await clock.advance(2.0)
    await clock.advance(2.0)
    assert not task.done()
    published = stage.stats.published
    assert published > 3
    feed.cut = True  # now nothing gets through: the feed fails, then the bus
    bus.failures = 1_000
    cut_at = clock.monotonic()
    while not task.done() and clock.monotonic() - cut_at < 10:
        await clock.advance(0.5)
    assert task.done()
    with pytest.raises(StepDown, match=r"no snapshot published for 5\.\d s \(limit 5 s\)"):
        task.result()
    assert clock.monotonic() - cut_at <= 5.0 + 1.0 + 0.5  # within a tick of the limit
    assert stage.stats.published == published


async def test_a_leader_whose_feed_never_opens_steps_down_at_the_stall_limit() -> None:
    clock = ManualClock()

    class ClosedFeed(MemoryFeed):
        async def open(self) -> list[tuple[PartialKey, Partial]]:
            raise StoreUnavailable("store unreachable")

    stage = stalling_stage(ClosedFeed(MemoryStoreServer(clock, ttl_s=600)), MemoryBus(), clock)
    task = asyncio.create_task(stage.run(3))
    for _ in range(40):
        await clock.advance(0.25)
        if task.done():
            break
    with pytest.raises(StepDown):
        task.result()
    assert 5.0 <= clock.monotonic() <= 5.0 + 5.0  # the backoff's ceiling past the limit


class HangingBus(MemoryBus):
    """A bus whose publishes get no answer once ``hang`` is set: dropped packets."""

    hang = False

    async def publish(self, message: Published) -> None:
        if self.hang:
            await asyncio.get_running_loop().create_future()
        await super().publish(message)


async def test_a_publish_that_gets_no_answer_is_abandoned_at_the_stall_limit() -> None:
    clock = ManualClock()
    bus = HangingBus()
    stage = stalling_stage(MemoryFeed(MemoryStoreServer(clock, ttl_s=600)), bus, clock)
    task = asyncio.create_task(stage.run(3))
    await clock.advance(2.0)
    assert stage.stats.published >= 2
    bus.hang = True
    last = clock.monotonic()
    while not task.done() and clock.monotonic() - last < 20:
        await clock.advance(0.25)
    with pytest.raises(StepDown, match="the publish got no answer"):
        task.result()
    assert clock.monotonic() - last <= 5.0 + 0.5  # not a further tick or timeout later


async def test_a_leader_stepping_down_does_not_wait_for_a_feed_that_cannot_close() -> None:
    # Closing the feed removes a listener on the cluster; cut off from it, that call
    # would hang for a whole call timeout and hold the lease back from a pod that
    # can publish.
    clock = ManualClock()
    closed = asyncio.Event()

    class StuckFeed(MemoryFeed):
        async def close(self) -> None:
            await closed.wait()

    bus = HangingBus()
    stage = stalling_stage(StuckFeed(MemoryStoreServer(clock, ttl_s=600)), bus, clock)
    task = asyncio.create_task(stage.run(3))
    await clock.advance(1.0)
    bus.hang = True
    cut = clock.monotonic()
    while not task.done() and clock.monotonic() - cut < 20:
        await clock.advance(0.1)
    with pytest.raises(StepDown):
        task.result()
    assert clock.monotonic() - cut <= 5.0 + 0.5 + 0.2  # the stall, then at most 0.5 s
    closed.set()  # the close finishes later, by itself
    await asyncio.sleep(0)


async def test_a_long_read_of_the_map_lets_the_event_loop_run() -> None:
    # A full read of a big window once held the loop for 30 s: the lease was not
    # renewed, the consumer's session expired and the liveness probe failed.
    clock = SystemClock()
    work_s, items = 0.0005, 800  # 0.4 s of applying, in small pieces

    class SlowFeed:
        """A feed whose first read decodes slowly, entry by entry (PartialFeed)."""

        async def changes(self) -> list[tuple[PartialKey, Partial]]:
            return []

        async def close(self) -> None:
            pass

        async def open(self) -> Iterator[tuple[PartialKey, Partial]]:
            def decode() -> Iterator[tuple[PartialKey, Partial]]:
                for bucket in range(items):
                    until = time.perf_counter() + work_s
                    while time.perf_counter() < until:  # decoding, say
                        pass
                    yield PartialKey("t", 0, int(clock.time()) - bucket % 200), Partial(0, 1)

            return decode()

    wakes: list[float] = []

    async def ticker() -> None:
        while True:
            wakes.append(time.perf_counter())
            await asyncio.sleep(0.005)

    stage = ReduceStage(
        SlowFeed(),
        MemoryBus(),
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10),
        identity="pod_a",
        leading_epoch=lambda: 3,
    )
    beats = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    task = asyncio.create_task(stage.run(3))
    try:
        async with asyncio.timeout(10):
            while stage.stats.published == 0:  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    longest = max(b - a for a, b in itertools.pairwise(wakes))
    assert longest < 0.15, f"the event loop was held for {longest:.3f} s"
