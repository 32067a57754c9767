"""When the map stage flushes and the leader ticks, on a clock moved by hand:
flushes on the wall clock's multiples of the interval (a fetch never waits past
one), and the tick a fixed delay after each second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any

import orjson
import pytest

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
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


async def test_the_tick_runs_its_delay_after_each_second() -> None:
    clock = ManualClock(start=START)
    bus = MemoryBus()
    payloads: list[bytes] = []

    def deliver(message: Published) -> None:
        payloads.append(message.payload)

    await bus.subscribe(deliver)
    stage = ReduceStage(
        MemoryFeed(MemoryStoreServer(clock, ttl_s=600)),
        bus,
        clock,
        ReduceSettings(("app",), 300, 1, 1.0, 10, tick_delay_s=0.1),
        identity="pod_a",
        leading_epoch=lambda: 1,
    )
    await run_for(clock, stage.run(1), 3.0)
    generated = [orjson.loads(p)["generated_at"] for p in payloads]
    start = int(START)  # the first right after the window is read, then on the beats
    assert generated == pytest.approx([START, start + 1.1, start + 2.1, start + 3.1])
