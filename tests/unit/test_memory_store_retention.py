"""The in-memory store keeps only what its TTL covers, as Hazelcast does: a demo
that writes a new bucket every second for hours holds the last ``ttl_s`` of
buckets, not every bucket since it started (issue 16: the demo grew ~14 MiB/min)."""

from __future__ import annotations

from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.partial import Agg, Partial

DIMS = 3
TTL_S = 60.0
PARTITIONS = 6


def one_event(bucket: int) -> Partial:
    partial = Partial(bucket, DIMS, bucket)
    agg = Agg()
    agg.count = 1
    partial.total.merge_from(agg)
    return partial


async def test_ten_minutes_of_buckets_leave_only_the_ttls_worth() -> None:
    clock = ManualClock()
    server = MemoryStoreServer(clock, ttl_s=TTL_S)
    client = MemoryStoreClient(server)
    for second in range(600):  # one bucket a second per partition, as the map stage flushes
        for partition in range(PARTITIONS):
            assert await client.write("events", partition, [one_event(second)]) == []
        await clock.advance(1)
    # Without the sweep, every one of the 3,600 buckets stayed in both.
    assert server.held <= PARTITIONS * (TTL_S + 2)
    assert client.expected <= PARTITIONS * (2 * TTL_S + 2)
    # What a reader sees is unchanged: the buckets written in the last TTL.
    assert len(server.all_keys()) == PARTITIONS * (TTL_S - 1)


async def test_a_bucket_written_within_its_ttl_stays_and_keeps_its_fencing() -> None:
    clock = ManualClock()
    server = MemoryStoreServer(clock, ttl_s=TTL_S)
    owner, zombie = MemoryStoreClient(server), MemoryStoreClient(server)
    assert await owner.write("events", 0, [one_event(7)]) == []
    for _ in range(int(TTL_S) * 3):  # rewritten every second: never expires
        await clock.advance(1)
        assert await owner.write("events", 0, [one_event(7)]) == []
    assert server.held == 1
    # A writer that never loaded the entry is still fenced off it.
    assert await zombie.write("events", 0, [one_event(7)]) == [7]
