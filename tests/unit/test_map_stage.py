"""The map stage on the memory adapters: commits wait for the store and the
dead-letter queue; outages pause it and it resumes by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import orjson
import pytest

from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
from aggregator.ports.source import SourceRecord, SourceUnavailable
from aggregator.services import map_stage
from aggregator.services.map_stage import MapStage


class CollectingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []
        self.offered: list[int] = []
        """How many dead letters each call was given, failed calls included."""
        self.failing = False

    async def send_many(self, items: Sequence[tuple[SourceRecord, str]]) -> None:
        self.offered.append(len(items))
        if self.failing:
            raise SourceUnavailable("dead-letter topic unreachable")
        self.sent.extend((r.partition, r.offset, reason) for r, reason in items)


async def until(condition: object, timeout_s: float = 5.0) -> None:
    """Poll a condition that no event signals (it reads the stage's counters)."""
    async with asyncio.timeout(timeout_s):
        while not (callable(condition) and condition()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_commits_wait_for_dead_letters_and_store() -> None:
    clock = SystemClock()
    log = MemoryLog(clock, partitions=2)
    now = clock.time()
    good = orjson.dumps({"ts": now, "app": "a"})
    for i in range(20):
        log.append(i % 2, good if i % 5 else b"not json")
    server = MemoryStoreServer(clock, ttl_s=600)
    consumer = MemoryConsumer(log, "g", "m1")
    dead = CollectingDeadLetters()
    dead.failing = True
    stage = MapStage(
        consumer,
        MemoryStoreClient(server),
        clock,
        FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1000),
        flush_interval_s=0.05,
        dead_letters=dead,
    )
    task = asyncio.create_task(stage.run())
    try:
        await until(lambda: stage.stats.records == 20)
        # Every flush that ends from now on began after all 20 records were
        # folded (fold and flush run one after the other in the stage's task).
        flushes = stage.stats.flushes
        await until(lambda: stage.stats.flushes > flushes)
        assert dead.offered[-1] == 4  # that flush tried to send every dead letter
        assert await consumer.committed(0) is None  # dead letters not out: no commit
        assert await consumer.committed(1) is None
        dead.failing = False
        await until(lambda: len(dead.sent) == 4)
        await until(lambda: stage.ready)
        assert sorted(dead.sent) == [
            (0, 0, "invalid_json"),
            (0, 5, "invalid_json"),
            (1, 2, "invalid_json"),
            (1, 7, "invalid_json"),
        ]
        await until(lambda: log.group("g", 10).committed == {0: 10, 1: 10})

        server.available = False
        log.append(0, good)
        await until(lambda: not stage.ready)
        assert log.group("g", 10).committed[0] == 10
        server.available = True
        await until(lambda: log.group("g", 10).committed.get(0) == 11)
        assert stage.ready
        assert stage.stats.counted == 17
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_heartbeat_does_not_stop_the_membership_loop() -> None:
    from aggregator.adapters.memory.members import MemoryMembers
    from aggregator.ports.members import MemberInfo
    from aggregator.services.membership import Membership

    calls = 0

    async def describe() -> MemberInfo:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("source not started yet")
        return MemberInfo("pod", "pod_x", 0.0, 0.0, (), 0.0, 0, True)

    registry = MemoryMembers(SystemClock())
    membership = Membership(registry, SystemClock(), describe, interval_s=0.05)
    task = asyncio.create_task(membership.run())
    try:
        await until(lambda: [m.identity for m in membership.members] == ["pod_x"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SilentOutage(MemoryConsumer):
    """A consumer that, while ``down``, fetches nothing without an error (as an
    aiokafka consumer does while the brokers are gone) and cannot answer for its
    end offsets."""

    down = False

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        if self.down:
            await asyncio.sleep(timeout_s)
            return []
        return await super().fetch(max_records, timeout_s)

    async def end_offsets(self) -> dict[int, int]:
        if self.down:
            raise SourceUnavailable("brokers unreachable (simulated)")
        return await super().end_offsets()


async def test_a_source_that_goes_silent_and_unreachable_makes_the_stage_unready(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(map_stage, "SOURCE_CHECK_S", 0.3)
    caplog.set_level(logging.INFO, "aggregator.map")
    clock = SystemClock()
    log = MemoryLog(clock, partitions=1)
    good = orjson.dumps({"ts": clock.time(), "app": "a"})
    consumer = SilentOutage(log, "g", "m1")
    stage = MapStage(
        consumer,
        MemoryStoreClient(MemoryStoreServer(clock, ttl_s=600)),
        clock,
        FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1000),
        flush_interval_s=0.05,
    )
    task = asyncio.create_task(stage.run())
    try:
        log.append(0, good)
        await until(lambda: stage.stats.counted == 1 and stage.ready)
        await asyncio.sleep(0.8)  # idle, but reachable: the checks pass
        assert stage.ready
        consumer.down = True
        await until(lambda: not stage.ready, timeout_s=3.0)
        assert "source unavailable; not ready until it answers" in caplog.text
        log.append(0, good)
        consumer.down = False
        await until(lambda: stage.ready and stage.stats.counted == 2, timeout_s=3.0)
        assert "source reachable again" in caplog.text
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
