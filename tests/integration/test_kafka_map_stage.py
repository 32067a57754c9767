"""The map stage on real Kafka (memory store): members join and leave mid-stream
and every valid event is counted exactly once, every malformed one dropped once.

This is where the rebalance callbacks meet the stage's own flushes: they must
never interleave (see aggregator/adapters/kafka/rebalance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from aggregator.adapters.kafka.producer import produce_synthetic
from aggregator.adapters.kafka.source import KafkaSource
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialStore
from aggregator.services.map_stage import SOURCE_CHECK_S, MapStage
from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SETTINGS = FoldSettings(
    schema=EventSchema(),
    bucket_seconds=1,
    window_seconds=300,
    grace_seconds=30.0,
    future_seconds=60.0,
    max_message_bytes=65536,
)


class Member:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        name: str,
        store: PartialStore,
        request_timeout_s: float = 10.0,
    ):
        self.source = KafkaSource(
            bootstrap,
            topic,
            group,
            name,
            session_timeout_s=6.0,
            heartbeat_interval_s=0.2,
            request_timeout_s=request_timeout_s,
        )
        self.stage = MapStage(self.source, store, SystemClock(), SETTINGS, flush_interval_s=0.2)
        self.task = asyncio.create_task(self.stage.run())

    async def stop(self) -> None:
        """As the pod does on SIGTERM: cancel the loop, then flush, commit, leave."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stage.stop()


async def test_members_join_and_leave_mid_stream_and_every_event_counts_once(
    kafka: KafkaServer, kafka_topic: str
) -> None:
    server = MemoryStoreServer(SystemClock(), ttl_s=3600)
    group = unique_name("map")
    producing = asyncio.create_task(
        produce_synthetic(
            kafka.bootstrap, kafka_topic, rate=1500, duration_s=3.0, bad_fraction=0.05, seed=11
        )
    )
    a = Member(kafka.bootstrap, kafka_topic, group, "a", MemoryStoreClient(server))
    await asyncio.sleep(1.0)
    b = Member(kafka.bootstrap, kafka_topic, group, "b", MemoryStoreClient(server))
    await asyncio.sleep(1.0)
    await a.stop()
    report = await producing

    ends = await b.source.end_offsets()
    deadline = time.monotonic() + 30
    while [await b.source.committed(p) for p in range(6)] != [ends.get(p) for p in range(6)]:
        assert time.monotonic() < deadline, f"b did not catch up: {b.stage.stats}"
        await asyncio.sleep(0.2)
    await b.stop()

    counted = 0
    dropped: Counter[str] = Counter()
    for key in server.all_keys():
        entry = server.get(key)
        assert entry is not None
        partial = Partial.from_wire(orjson.loads(entry[1]))
        counted += partial.total.count
        dropped.update(partial.dropped)
    assert sum(ends.values()) == report.sent
    assert counted == report.valid
    assert dict(dropped) == report.malformed
    assert a.stage.stats.fenced == 0
    assert b.stage.stats.fenced == 0


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_broker_killed_mid_stream_makes_the_stage_unready_until_it_returns(
    kafka: KafkaServer, kafka_topic: str
) -> None:
    """aiokafka's fetch returns nothing while the broker is gone, so the stage asks
    for the end offsets after SOURCE_CHECK_S of silence: not ready until it answers
    again, and nothing is lost or counted twice across the outage."""
    server = MemoryStoreServer(SystemClock(), ttl_s=3600)
    member = Member(
        kafka.bootstrap,
        kafka_topic,
        unique_name("map"),
        "a",
        MemoryStoreClient(server),
        request_timeout_s=3.0,
    )
    try:
        first = await produce_synthetic(
            kafka.bootstrap, kafka_topic, rate=2000, duration_s=0.5, bad_fraction=0.0, seed=3
        )
        await until(
            lambda: member.stage.stats.counted == first.valid and member.stage.ready,
            30.0,
            f"the first events were not counted: {member.stage.stats}",
        )
        kafka.kill()
        killed_at = time.monotonic()
        await until(
            lambda: not member.stage.ready,
            SOURCE_CHECK_S + 3.0 + 10.0,
            "the stage stayed ready with the broker gone",
        )
        print(f"not ready {time.monotonic() - killed_at:.1f} s after the broker was killed")
        await asyncio.sleep(1.0)
        assert not member.stage.ready, "ready again while the broker is still down"
        await asyncio.to_thread(kafka.start)
        second = await produce_synthetic(
            kafka.bootstrap, kafka_topic, rate=2000, duration_s=0.5, bad_fraction=0.0, seed=4
        )
        await until(
            lambda: member.stage.ready and member.stage.stats.counted == first.valid + second.valid,
            60.0,
            f"the stage did not recover after the broker returned: {member.stage.stats}",
        )
    finally:
        if not kafka.running():
            await asyncio.to_thread(kafka.start)
        await member.stop()
    counted = sum(
        Partial.from_wire(orjson.loads(entry[1])).total.count
        for entry in (server.get(key) for key in server.all_keys())
        if entry is not None
    )
    assert counted == first.valid + second.valid
