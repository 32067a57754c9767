"""When the map stage flushes and the leader ticks, on a clock moved by hand:
flushes on the wall clock's multiples of the interval (a fetch never waits past
one), the tick as long after each second as the flushes that close it take to
land, and a flush's partitions written side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping, Sequence
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
