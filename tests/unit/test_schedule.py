"""When the map stage flushes and the leader ticks, on a clock moved by hand:
flushes on the wall clock's multiples of the interval (a fetch never waits past
one), the tick as long after each second as the flushes that close it take to
land, and a flush's partitions written side by side."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock, SystemClock
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
from aggregator.core.partial import Partial
from aggregator.ports.bus import Published
from aggregator.ports.source import RebalanceListener, SourceRecord
from aggregator.ports.store import PartialKey, StoreUnavailable
from aggregator.services.leading import StepDown
from aggregator.services.map_stage import MapStage
from aggregator.services.reduce_stage import ReduceSettings, ReduceStage

START = 1_700_000_000.3
FOLD = FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1000)


class IdleSource:
    """A source with nothing to read whose fetch waits on the test's clock."""

    name = "events"

    def __init__(self, clock: ManualClock) -> None:
        self._clock = clock
        self.waits: list[tuple[float, float]] = []
        """(wall time, timeout) of each fetch."""

    async def start(self, listener: RebalanceListener) -> None:
        return None

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        self.waits.append((self._clock.time(), timeout_s))
        await self._clock.sleep(timeout_s)
        return []

    async def commit(self, offsets: Mapping[int, int]) -> None:
        return None

    async def seek(self, partition: int, offset: int) -> None:
        return None

    async def committed(self, partition: int) -> int | None:
        return None

    async def end_offsets(self) -> dict[int, int]:
        return {}

    def assignment(self) -> frozenset[int]:
        return frozenset()

    async def stop(self) -> None:
        return None


class TimedMapStage(MapStage):
    def __init__(self, clock: ManualClock, **kwargs: object) -> None:
        self.source = IdleSource(clock)
        super().__init__(
            self.source,
            MemoryStoreClient(MemoryStoreServer(clock, ttl_s=600)),
            clock,
            FOLD,
            flush_interval_s=0.5,
            **kwargs,  # type: ignore[arg-type]
        )
        self.flushed_at: list[float] = []

    async def flush(self) -> bool:
        self.flushed_at.append(self._clock.time())
        return await super().flush()


async def run_for(clock: ManualClock, work: Coroutine[Any, Any, None], seconds: float) -> None:
    """Run ``work`` while the clock moves ``seconds``, then cancel it."""
    task = asyncio.create_task(work)
    try:
        await clock.advance(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_flushes_fall_on_the_wall_clock_multiples_of_the_interval() -> None:
    clock = ManualClock(start=START)
    stage = TimedMapStage(clock)
    await run_for(clock, stage.run(), 3.0)
    assert stage.flushed_at == pytest.approx([START + 0.2 + 0.5 * k for k in range(6)])
    for at, timeout in stage.source.waits:  # no fetch waits past a flush that is due
        assert at + timeout <= START + 0.2 + 0.5 * ((at - START - 0.2) // 0.5 + 1) + 1e-9


async def test_unaligned_flushes_follow_the_start_and_the_fetch_waits() -> None:
    # The schedule before aligned flushes (the benchmark's baseline): the interval
    # counts from the start, and a due flush waits for the 0.2 s fetch under way.
    clock = ManualClock(start=START)
    stage = TimedMapStage(clock, align_flushes=False)
    await run_for(clock, stage.run(), 3.0)
    assert stage.flushed_at == pytest.approx([START + 0.6 * k for k in range(1, 5)])


async def run_leader(clock: ManualClock, server: MemoryStoreServer, seconds: float) -> list[bytes]:
    """Snapshots of a reduce stage with a 0.25 s delay ceiling over ``seconds``."""
    bus = MemoryBus()
    payloads: list[bytes] = []

    def deliver(message: Published) -> None:
        payloads.append(message.payload)

    await bus.subscribe(deliver)
    stage = ReduceStage(
        MemoryFeed(server),
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10, tick_delay_s=0.25),
        identity="pod_a",
        leading_epoch=lambda: 1,
    )
    await run_for(clock, stage.run(1), seconds)
    return payloads


async def test_with_nothing_learned_the_tick_waits_its_ceiling_after_each_second() -> None:
    clock = ManualClock(start=START)
    payloads = await run_leader(clock, MemoryStoreServer(clock, ttl_s=600), 3.0)
    generated = [orjson.loads(p)["generated_at"] for p in payloads]
    start = int(START)
    assert generated == pytest.approx([START, start + 1.25, start + 2.25, start + 3.25])


async def closing_flushes(clock: ManualClock, server: MemoryStoreServer, after_s: float) -> None:
    """A pod whose flush that closes each second lands ``after_s`` after it."""
    store = MemoryStoreClient(server)
    second = int(clock.time())
    while True:
        second += 1
        await clock.sleep(second + after_s - clock.time())
        partial = Partial(second - 1, 1, offset=second)
        partial.total.count = 7
        await store.write("events", 0, [partial])


async def test_the_tick_learns_when_the_closing_flushes_land_and_shows_them() -> None:
    clock = ManualClock(start=START)
    server = MemoryStoreServer(clock, ttl_s=600)
    writer = asyncio.create_task(closing_flushes(clock, server, 0.04))
    try:
        payloads = await run_leader(clock, server, 8.0)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    snapshots = [orjson.loads(p) for p in payloads]
    late = [s["generated_at"] % 1 for s in snapshots[3:]]
    assert late == pytest.approx([0.05] * len(late), abs=0.006)  # the landing + 10 ms
    for snapshot in snapshots[1:]:  # every second is complete in the first tick after it
        shown = {s["start"]: s["count"] for s in snapshot["series"] if s["count"]}
        closed = int(snapshot["generated_at"]) - 1
        assert shown.get(closed) == 7


class OverlapStore(MemoryStoreClient):
    """Counts how many writes are under way at once."""

    def __init__(self, server: MemoryStoreServer) -> None:
        super().__init__(server)
        self.in_flight = 0
        self.most_in_flight = 0

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return await super().write(source, partition, partials)
        finally:
            self.in_flight -= 1


async def test_a_flush_writes_its_partitions_side_by_side_then_commits_them_all() -> None:
    clock = SystemClock()
    log = MemoryLog(clock, partitions=3)
    event = orjson.dumps({"ts": clock.time(), "app": "a"})
    for i in range(30):
        log.append(i % 3, event)
    store = OverlapStore(MemoryStoreServer(clock, ttl_s=600))
    stage = MapStage(MemoryConsumer(log, "g", "m1"), store, clock, FOLD, flush_interval_s=0.05)
    task = asyncio.create_task(stage.run())
    try:
        async with asyncio.timeout(5):
            while log.group("g", 10).committed != {0: 10, 1: 10, 2: 10}:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert store.most_in_flight == 3


class CutBus(MemoryBus):
    """A bus cut off from this pod once ``cut`` is set: its publishes fail at once
    (refused) or never answer (dropped packets); ``published_at`` is the
    monotonic time of the last one that got through."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock
        self.cut = ""
        self.published_at = 0.0

    async def publish(self, message: Published) -> None:
        if self.cut == "refused":
            raise StoreUnavailable("bus unreachable")
        if self.cut == "dropped":
            await asyncio.get_running_loop().create_future()
        await super().publish(message)
        self.published_at = self._clock.monotonic()


@pytest.mark.parametrize(
    ("flushes_land", "cut"), [(True, "refused"), (False, "refused"), (False, "dropped")]
)
async def test_a_leader_following_the_flushes_still_steps_down_at_the_stall_limit(
    flushes_land: bool, cut: str
) -> None:
    # Merged from main: the reads between ticks (every 5 ms) apply changes but are
    # no publish, so they never hold the stall limit off, whether the flushes go on
    # landing or stop with the cut; a publish that hangs is abandoned at the limit,
    # and after refused publishes the stage steps down between ticks at the limit.
    clock = ManualClock(start=START)
    server = MemoryStoreServer(clock, ttl_s=600)
    writer = asyncio.create_task(closing_flushes(clock, server, 0.04))
    bus = CutBus(clock)
    stage = ReduceStage(
        MemoryFeed(server),
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10, tick_delay_s=0.25, stall_s=5.0),
        identity="pod_a",
        leading_epoch=lambda: 1,
    )
    task = asyncio.create_task(stage.run(1))
    try:
        await clock.advance(4.0)
        assert stage.stats.published >= 4
        bus.cut = cut
        if not flushes_land:
            writer.cancel()
        while not task.done() and clock.monotonic() - bus.published_at < 20:
            await clock.advance(0.05)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    with pytest.raises(StepDown, match=r"no snapshot published for 5\.\d s"):
        task.result()
    # At the limit (within the clock's 50 ms steps), not at the first tick past it:
    # five failed ticks at a learned phase end a hair short of the limit.
    assert 5.0 - 0.001 <= clock.monotonic() - bus.published_at <= 5.0 + 0.05


async def test_a_big_change_set_read_between_ticks_is_applied_in_slices() -> None:
    # Merged from main: a resync's full read can arrive in a read between ticks
    # rather than in the tick; applying it must let the event loop run as the
    # tick's own apply does, and it still counts as a landing of closed seconds.
    clock = SystemClock()
    work_s, items = 0.0005, 800  # 0.4 s of applying, in small pieces
    reads: list[str] = []

    class ResyncFeed:
        """A feed (PartialFeed) whose second read of changes, the first between
        ticks, is a slow full read."""

        async def open(self) -> list[tuple[PartialKey, Partial]]:
            return []

        async def close(self) -> None:
            pass

        async def changes(self) -> Iterator[tuple[PartialKey, Partial]]:
            reads.append("tick" if not reads else "follow")
            if len(reads) != 2:
                return iter(())
            second = int(clock.time())

            def decode() -> Iterator[tuple[PartialKey, Partial]]:
                for i in range(items):
                    until = time.perf_counter() + work_s
                    while time.perf_counter() < until:  # decoding, say
                        pass
                    partial = Partial(second - 1 - i % 200, 1, offset=i)
                    partial.total.count = 1
                    yield PartialKey("t", i // 200, partial.bucket), partial

            return decode()

    wakes: list[float] = []

    async def ticker() -> None:
        while True:
            wakes.append(time.perf_counter())
            await asyncio.sleep(0.005)

    bus = MemoryBus()
    stage = ReduceStage(
        ResyncFeed(),
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10, tick_delay_s=0.25),
        identity="pod_a",
        leading_epoch=lambda: 3,
    )
    beats = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    task = asyncio.create_task(stage.run(3))
    try:
        async with asyncio.timeout(10):
            while stage.stats.published < 2:  # noqa: ASYNC110 (a counter, no event)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    longest = max(b - a for a, b in itertools.pairwise(wakes))
    assert longest < 0.15, f"the event loop was held for {longest:.3f} s"
    latest = await bus.latest()
    assert latest is not None
    assert orjson.loads(latest.payload)["total"]["count"] == items  # applied by the follow
