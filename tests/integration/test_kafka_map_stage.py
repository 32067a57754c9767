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

import orjson
import pytest

from aggregator.adapters.kafka.producer import produce_synthetic
from aggregator.adapters.kafka.source import KafkaSource
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.events import EventSchema
from aggregator.core.partial import Partial
from aggregator.services.map_stage import MapStage
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
        self, bootstrap: str, topic: str, group: str, name: str, server: MemoryStoreServer
    ):
        self.source = KafkaSource(
            bootstrap, topic, group, name, session_timeout_s=6.0, heartbeat_interval_s=0.2
        )
        self.stage = MapStage(
            self.source, MemoryStoreClient(server), SystemClock(), SETTINGS, flush_interval_s=0.2
        )
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
    a = Member(kafka.bootstrap, kafka_topic, group, "a", server)
    await asyncio.sleep(1.0)
    b = Member(kafka.bootstrap, kafka_topic, group, "b", server)
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
