"""The map stage on the memory adapters: commits wait for the store and the
dead-letter queue; outages pause it and it resumes by itself; a fenced write
makes it reload and read again, never commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

import orjson
import pytest

from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
from aggregator.core.partial import Agg
from aggregator.ports.source import (
    DeadLetters,
    RebalanceListener,
    SourceRecord,
    SourceRefused,
    SourceUnavailable,
)
from aggregator.services import map_stage
from aggregator.services.map_stage import MapStage
from aggregator.services.retry import Backoff


class CollectingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []
        self.offered: list[int] = []
        """How many dead letters each call was given, failed calls included."""
        self.failing = False

    async def start(self) -> None:
        pass

    async def send_many(self, items: Sequence[tuple[SourceRecord, str]]) -> None:
        self.offered.append(len(items))
        if self.failing:
            raise SourceUnavailable("dead-letter topic unreachable")
        self.sent.extend((r.partition, r.offset, reason) for r, reason in items)


def memory_stage(
    consumer: MemoryConsumer,
    server: MemoryStoreServer,
    clock: SystemClock,
    dead_letters: DeadLetters | None = None,
) -> MapStage:
    """A stage on the memory adapters, default fold settings, flushing every 50 ms."""
    return MapStage(
        consumer,
        MemoryStoreClient(server),
        clock,
        FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1000),
        flush_interval_s=0.05,
        dead_letters=dead_letters,
    )


async def until(condition: object, timeout_s: float = 20.0) -> None:
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
    stage = memory_stage(consumer, server, clock, dead)
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
        # The failed write left partition 0 unknown: it was reloaded and read again
        # from offset 10 (the event is folded twice, and stored once).
        assert stage.stats.resyncs == 1
        assert stage.stats.counted == 18
        reader = MemoryStoreClient(server)
        stored = [p for n in (0, 1) for p in await reader.load(log.topic, n)]
        assert sum(p.total.count for p in stored) == 17
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
    stage = memory_stage(consumer, MemoryStoreServer(clock, ttl_s=600), clock)
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


class Offsets:
    """The consumer group's committed offsets, shared by the sources below, with
    each commit checked against what the store holds at that moment."""

    def __init__(self, store: MemoryStoreServer, topic: str) -> None:
        self.committed: dict[int, int] = {}
        self.history: list[int] = []
        self.past_the_store: list[tuple[int, int]] = []
        """(committed offset, highest stored offset) of each commit that claimed
        messages the store does not hold: a restart would skip them."""
        self._reader = MemoryStoreClient(store)
        self._topic = topic

    async def commit(self, partition: int, offset: int) -> None:
        partials = await self._reader.load(self._topic, partition)
        stored = max((p.offset for p in partials), default=-1)
        if offset > stored + 1:
            self.past_the_store.append((offset, stored))
        self.committed[partition] = offset
        self.history.append(offset)


class HeldPartition:
    """An ``EventSource`` that holds partition 0 of ``log`` and never learns that it
    lost it (a consumer cut off from the group coordinator that keeps fetching and
    committing); it reads only up to ``readable_to``, so the test decides who reads
    what, and when."""

    def __init__(self, log: MemoryLog, offsets: Offsets) -> None:
        self._log = log
        self._offsets = offsets
        self.position = 0
        self.readable_to = 0

    @property
    def name(self) -> str:
        return self._log.topic

    async def start(self, listener: RebalanceListener) -> None:
        await listener.on_assigned(frozenset({0}))
        self.position = self._offsets.committed.get(0, 0)

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        limit = min(max_records, self.readable_to - self.position)
        records = self._log.read(0, self.position, limit) if limit > 0 else []
        if not records:
            await asyncio.sleep(min(timeout_s, 0.01))
            return []
        self.position = records[-1].offset + 1
        return records

    async def commit(self, offsets: Mapping[int, int]) -> None:
        for partition, offset in offsets.items():
            await self._offsets.commit(partition, offset)

    async def seek(self, partition: int, offset: int) -> None:
        self.position = offset

    async def committed(self, partition: int) -> int | None:
        return self._offsets.committed.get(partition)

    async def end_offsets(self) -> dict[int, int]:
        return {0: self._log.end_offset(0)}

    def assignment(self) -> frozenset[int]:
        return frozenset({0})

    async def stop(self) -> None:
        return None


async def test_a_deposed_map_stage_reloads_and_never_commits_past_the_store() -> None:
    # Pod A folds and commits offsets 0-9, then loses partition 0 without
    # noticing; pod B takes it over and stores and commits 10-19.  A, still
    # running, reads 10-24: its write is fenced (B wrote since A last loaded), so
    # it must drop what it folded, reload B's partial, read again from the
    # committed offset 20, and commit 25 only once it has stored 20-24.
    clock = SystemClock()
    log = MemoryLog(clock, partitions=1)
    event = orjson.dumps({"ts": clock.time(), "app": "a"})
    for _ in range(25):
        log.append(0, event)
    server = MemoryStoreServer(clock, ttl_s=600)
    offsets = Offsets(server, log.topic)
    settings = FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1000)
    sources = {pod: HeldPartition(log, offsets) for pod in "ab"}
    stages = {
        pod: MapStage(source, MemoryStoreClient(server), clock, settings, flush_interval_s=0.05)
        for pod, source in sources.items()
    }
    tasks: list[asyncio.Task[None]] = []
    try:
        sources["a"].readable_to = 10
        tasks.append(asyncio.create_task(stages["a"].run()))
        await until(lambda: offsets.committed.get(0) == 10)
        sources["b"].readable_to = 20
        tasks.append(asyncio.create_task(stages["b"].run()))
        await until(lambda: offsets.committed.get(0) == 20)

        sources["a"].readable_to = 25
        with contextlib.suppress(TimeoutError):  # the assertions below say what went wrong
            await until(lambda: offsets.committed.get(0) == 25)

        assert offsets.past_the_store == []
        assert offsets.history == [10, 20, 25]
        assert (stages["a"].stats.fenced, stages["a"].stats.resyncs) == (1, 1)
        assert stages["a"].stats.counted == 10 + 15 + 5  # 20-24 folded again after the reload
        (stored,) = await MemoryStoreClient(server).load(log.topic, 0)
        assert (stored.total.count, stored.offset) == (25, 24)  # each message once
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize("lost", [1, 3])
async def test_a_flush_retried_after_a_write_that_landed_counts_nothing_twice(lost: int) -> None:
    """The store adds deltas: a write that raised may have stored them, so the
    stage reloads the partition and reads it again from the committed offset
    before writing it again, instead of sending the same deltas once more."""
    clock = SystemClock()
    log = MemoryLog(clock, partitions=2)
    now = clock.time()
    for i in range(40):
        log.append(i % 2, orjson.dumps({"ts": now + i % 3, "app": f"a{i % 4}"}))
    server = MemoryStoreServer(clock, ttl_s=600)
    consumer = MemoryConsumer(log, "g", "m1")
    stage = memory_stage(consumer, server, clock)
    client = stage._store
    assert isinstance(client, MemoryStoreClient)
    client.lose_replies = lost  # the first flushes land, and raise
    task = asyncio.create_task(stage.run())
    try:
        await until(lambda: log.group("g", 20).committed == {0: 20, 1: 20})
        for i in range(40, 60):  # and the partitions go on from there
            log.append(i % 2, orjson.dumps({"ts": now + i % 3, "app": f"a{i % 4}"}))
        await until(lambda: log.group("g", 30).committed == {0: 30, 1: 30})
        reader = MemoryStoreClient(server)
        stored = [p for n in (0, 1) for p in await reader.load(log.topic, n)]
        assert sum(p.total.count for p in stored) == 60
        assert stage.stats.resyncs >= 1
        assert sum(p.by[0].get("a1", Agg()).count for p in stored) == 15
        assert {n: max(p.offset for p in await reader.load(log.topic, n)) for n in (0, 1)} == {
            0: 29,
            1: 29,
        }
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RefusedDeadLetters(CollectingDeadLetters):
    """A dead-letter producer whose start is refused with each message of ``refusals``
    in turn, then works; with ``hold_at``, the start that finds that many refusals
    left waits for ``release`` (so a test can look at the stage mid-refusal, however
    slow the machine)."""

    def __init__(self, refusals: list[str], hold_at: int | None = None) -> None:
        super().__init__()
        self.refusals = refusals
        self.hold_at = hold_at
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self) -> None:
        if self.hold_at is not None and len(self.refusals) == self.hold_at:
            self.held.set()
            await self.release.wait()
        if self.refusals:
            raise SourceRefused(self.refusals.pop(0))


async def test_a_refused_start_is_said_once_per_reason_and_retried_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(map_stage, "SOURCE_START_BACKOFF", Backoff(first_s=0.01, max_s=0.01))
    caplog.set_level(logging.INFO, "aggregator.map")
    clock = SystemClock()
    log = MemoryLog(clock, partitions=1)
    log.append(0, orjson.dumps({"ts": clock.time(), "app": "a"}))
    consumer = MemoryConsumer(log, "g", "m1")
    refusals = ["wrong password"] * 20 + ["expired certificate"] * 20
    dead = RefusedDeadLetters(refusals, hold_at=10)
    stage = memory_stage(consumer, MemoryStoreServer(clock, ttl_s=600), clock, dead)
    task = asyncio.create_task(stage.run())
    try:
        async with asyncio.timeout(30):
            await dead.held.wait()  # 30 refusals in: both reasons said, still refused
        ready_while_refused = stage.ready
        assert not ready_while_refused
        assert consumer.assignment() == frozenset()  # the source waits for the producer
        dead.release.set()
        await until(lambda: stage.ready and stage.stats.counted == 1, timeout_s=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in said] == [
        "not ready: wrong password; retrying quietly",
        "not ready: expired certificate; retrying quietly",
    ]
    assert {r.levelno for r in said} == {logging.ERROR}
