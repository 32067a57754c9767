"""The map stage on real Kafka and real Hazelcast with buckets that seal: members
join and leave mid-stream, each writes deltas, and the buckets that grow past the
(here tiny) seal threshold are appended to as segments.  What the reducer's feed
reads adds up, bucket by bucket, to every valid event once and every malformed
one dropped once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack

import pytest

from aggregator.adapters.hazelcast import HazelcastFeed, HazelcastStore, connect
from aggregator.adapters.kafka.producer import produce_synthetic
from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer, unique_name
from tests.integration.test_kafka_map_stage import Member

pytestmark = [pytest.mark.kafka, pytest.mark.hazelcast, pytest.mark.slow]

SEAL_BYTES = 4_096
"""A few flushes of the synthetic workload fill a bucket past this."""


async def test_members_join_and_leave_while_buckets_seal_and_every_event_counts_once(
    kafka: KafkaServer, kafka_topic: str, hazelcast: HazelcastCluster
) -> None:
    map_name = unique_name("partials-segments")
    group = unique_name("map")
    async with AsyncExitStack() as stack:

        async def store(name: str) -> HazelcastStore:
            client = await connect(hazelcast.members, hazelcast.cluster_name, client_name=name)
            stack.push_async_callback(client.shutdown)
            return HazelcastStore(
                client, writer=name, ttl_s=3600, map_name=map_name, seal_bytes=SEAL_BYTES
            )

        producing = asyncio.create_task(
            produce_synthetic(
                kafka.bootstrap, kafka_topic, rate=1500, duration_s=4.0, bad_fraction=0.05, seed=12
            )
        )
        store_a = await store("a")
        a = Member(kafka.bootstrap, kafka_topic, group, "a", store_a)
        await asyncio.sleep(1.0)
        store_b = await store("b")
        b = Member(kafka.bootstrap, kafka_topic, group, "b", store_b)
        await asyncio.sleep(1.5)
        await a.stop()
        report = await producing

        ends = await b.source.end_offsets()
        deadline = time.monotonic() + 30
        while [await b.source.committed(p) for p in range(6)] != [ends.get(p) for p in range(6)]:
            assert time.monotonic() < deadline, f"b did not catch up: {b.stage.stats}"
            await asyncio.sleep(0.2)
        await b.stop()

        feed = HazelcastFeed(
            await connect(hazelcast.members, hazelcast.cluster_name, client_name="reducer"),
            map_name=map_name,
        )
        stack.push_async_callback(feed.close)
        entries = list(await feed.open())
        counted = sum(partial.total.count for _, partial in entries)
        dropped: Counter[str] = Counter()
        for _, partial in entries:
            dropped.update(partial.dropped)
        assert sum(ends.values()) == report.sent
        assert counted == report.valid
        assert dict(dropped) == report.malformed
        sealed = store_a.stats.sealed + store_b.stats.sealed
        segments = store_a.stats.segments + store_b.stats.segments
        assert sealed > 0
        assert segments > 0
        assert sum(1 for key, _ in entries if key.segment) == segments
        print(f"\n{len(entries)} entries, {sealed} buckets sealed, {segments} segments")
