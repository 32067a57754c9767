"""The Hazelcast adapters against real members: a member killed in the middle of
a stream of delta writes (some buckets whole, some sealed and appending segments)
loses nothing, counts nothing twice and fences nobody wrongly, the feed catches
up after it, and ``connect`` fails fast when there is no cluster.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, suppress

import pytest
from hazelcast.asyncio import HazelcastClient

from aggregator.adapters.hazelcast import HazelcastFeed, HazelcastStore, connect
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialKey, StoreUnavailable
from tests.fixtures.kafka_hazelcast import HazelcastCluster, unique_name

SOURCE = "crashes"
PARTITIONS = 6
ROUNDS_BEFORE = 10
ROUNDS_AFTER = 10
RETRY_DEADLINE_S = 60.0
SEAL_BYTES = 120
"""A bucket seals at its fourth delta below (a partial of 4 apps encodes to 128
bytes) and appends the rest as segments: both layouts under the kill."""


def partial(bucket: int, count: int) -> Partial:
    """A delta: ``count`` events of one app, offset ``count`` (rounds count up)."""
    made = Partial(bucket, 1, count)
    made.total.count = count
    made.by[0][f"app-{count % 7}"] = made.total.copy()
    return made


def summed(partials: list[Partial]) -> Partial:
    total = partials[0].copy()
    for more in partials[1:]:
        total.merge_from(more)
    return total


def per_bucket(entries: dict[PartialKey, Partial]) -> dict[PartialKey, Partial]:
    """Entries added up per bucket (a sealed bucket's segments into it)."""
    totals: dict[PartialKey, list[Partial]] = {}
    for key, value in entries.items():
        totals.setdefault(key._replace(segment=0), []).append(value)
    return {key: summed(values) for key, values in totals.items()}


async def write_until_stored(
    store: HazelcastStore, partition: int, partials: list[Partial]
) -> tuple[list[int], int]:
    """As the map stage does: a write that raised may have added its deltas, so
    reload the partition and send again only the deltas whose offset the store
    does not hold (the skip rule), until the store takes them."""
    deadline = time.monotonic() + RETRY_DEADLINE_S
    failures = 0
    while True:
        try:
            return await store.write(SOURCE, partition, partials), failures
        except StoreUnavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        while True:
            try:
                stored = {p.bucket: p.offset for p in await store.load(SOURCE, partition)}
                break
            except StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        partials = [p for p in partials if stored.get(p.bucket, -1) < p.offset]
        if not partials:
            return [], failures


async def client(cluster: HazelcastCluster, stack: AsyncExitStack, name: str) -> HazelcastClient:
    made = await connect(cluster.members, cluster.cluster_name, client_name=name)
    stack.push_async_callback(made.shutdown)
    return made


@pytest.mark.hazelcast
@pytest.mark.slow
async def test_a_killed_member_loses_no_entry_and_cas_keeps_working(
    hazelcast: HazelcastCluster, request: pytest.FixtureRequest
) -> None:
    map_name = unique_name(request.node.name, prefix="partials")  # backup-count 1
    async with AsyncExitStack() as stack:
        writer_client = await client(hazelcast, stack, "pod-a")
        store = HazelcastStore(
            writer_client, writer="pod-a", ttl_s=600, map_name=map_name, seal_bytes=SEAL_BYTES
        )
        feed = HazelcastFeed(
            await client(hazelcast, stack, "reducer"), map_name=map_name, resync_after_s=1.0
        )
        stack.push_async_callback(feed.close)
        seen: dict[PartialKey, Partial] = dict(await feed.open())

        deltas: dict[PartialKey, list[Partial]] = {}
        fenced: list[int] = []
        failures = 0
        rounds = 0

        async def write_round() -> None:
            nonlocal rounds, fenced, failures
            for partition in range(PARTITIONS):
                # a new bucket, and the five before it again (replaced, sealed, appended)
                batch = [partial(b, rounds + 1) for b in range(max(0, rounds - 5), rounds + 1)]
                lost, failed = await write_until_stored(store, partition, batch)
                fenced += lost
                failures += failed
                for p in batch:
                    deltas.setdefault(PartialKey(SOURCE, partition, p.bucket), []).append(p)
            rounds += 1
            with suppress(StoreUnavailable):
                seen.update(await feed.changes())
            await asyncio.sleep(0.02)

        victim = hazelcast.members[0]
        left = asyncio.Event()

        def on_removed(member: object) -> None:
            address = getattr(member, "address", None)
            if f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}" == victim:
                left.set()

        writer_client.cluster_service.add_listener(member_removed=on_removed)
        for _ in range(ROUNDS_BEFORE):
            await write_round()
        kill = asyncio.create_task(asyncio.to_thread(hazelcast.kill_member, 0))
        deadline = time.monotonic() + RETRY_DEADLINE_S
        while not (kill.done() and left.is_set()):
            assert time.monotonic() < deadline, "the client never saw the member leave"
            await write_round()  # writes keep going while the member dies
        await kill
        for _ in range(ROUNDS_AFTER):
            await write_round()

        assert fenced == []  # an unknown outcome is reloaded, not taken for a fence
        assert store.stats.sealed > 0
        assert store.stats.segments > 0
        observer_client = await client(hazelcast, stack, "observer")
        observer = HazelcastStore(
            observer_client, writer="observer", ttl_s=600, map_name=map_name, seal_bytes=SEAL_BYTES
        )
        stored = {
            PartialKey(SOURCE, partition, p.bucket): p
            for partition in range(PARTITIONS)
            for p in await observer.load(SOURCE, partition)
        }
        truth = {key: summed(values) for key, values in deltas.items()}
        assert len(stored) == PARTITIONS * rounds
        assert stored == truth  # every delta added once

        # Fencing still works, sealed or not: the observer takes partition 0 over.
        for bucket in (rounds - 1, 0):  # the newest is whole, the oldest sealed
            added = partial(bucket, 1000 + bucket)
            assert await observer.write(SOURCE, 0, [added]) == []
            truth[PartialKey(SOURCE, 0, bucket)].merge_from(added)
            assert await store.write(SOURCE, 0, [partial(bucket, 2000)]) == [bucket]
        assert await store.write(SOURCE, 1, [partial(rounds - 1, 3000)]) == []
        truth[PartialKey(SOURCE, 1, rounds - 1)].merge_from(partial(rounds - 1, 3000))

        # The feed catches up (it re-reads the map after the membership change).
        deadline = time.monotonic() + 20.0
        while per_bucket(seen) != truth or feed.full_reads < 2:
            assert time.monotonic() < deadline, "the feed did not catch up"
            with suppress(StoreUnavailable):
                seen.update(await feed.changes())
            await asyncio.sleep(0.1)

        print(
            f"\n{store.stats.writes} writes, {store.stats.calls} calls "
            f"({store.stats.calls / store.stats.writes:.1f} per write of up to 6 deltas), "
            f"{store.stats.sealed} buckets sealed, {store.stats.segments} segments, "
            f"{rounds} rounds, {failures} writes retried while the member died"
        )


@pytest.mark.hazelcast
@pytest.mark.slow
async def test_a_cluster_outage_fails_fast_and_the_same_client_heals(
    hazelcast: HazelcastCluster, request: pytest.FixtureRequest
) -> None:
    """Every member gone: calls fail within the invocation timeout instead of
    hanging, and once members are back the client reconnects by itself."""
    map_name = unique_name(request.node.name, prefix="partials")
    async with AsyncExitStack() as stack:
        store = HazelcastStore(
            await client(hazelcast, stack, "pod-a"), writer="pod-a", ttl_s=600, map_name=map_name
        )
        feed = HazelcastFeed(
            await client(hazelcast, stack, "reducer"), map_name=map_name, resync_after_s=0.5
        )
        stack.push_async_callback(feed.close)
        assert await store.write(SOURCE, 0, [partial(1, 1)]) == []
        assert len(list(await feed.open())) == 1

        for index in reversed(range(len(hazelcast.members))):
            await asyncio.to_thread(hazelcast.kill_member, index)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.write(SOURCE, 0, [partial(1, 2)])
        assert time.monotonic() - started < 6.0  # invocation timeout 5 s, not a hang

        async def offline_everywhere() -> bool:
            try:
                await store.write(SOURCE, 0, [partial(1, 2)])
            except StoreUnavailable as error:
                return "ClientOfflineError" in str(error)
            return False

        deadline = time.monotonic() + 20.0
        while not await offline_everywhere():
            assert time.monotonic() < deadline, "the client never went offline"
            await asyncio.sleep(0.1)
        with pytest.raises(StoreUnavailable):
            await feed.changes()

        await asyncio.to_thread(hazelcast.start)  # both members, empty: the data is gone
        deadline = time.monotonic() + 60.0
        while True:
            assert time.monotonic() < deadline, "the client did not reconnect by itself"
            try:
                # the writes that raised leave the partition unknown: reload it first
                assert await store.load(SOURCE, 0) == []
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert await store.write(SOURCE, 0, [partial(1, 3)]) == []

        async def feed_caught_up() -> bool:
            try:
                changes = dict(await feed.changes())
            except StoreUnavailable:
                return False
            return changes.get(PartialKey(SOURCE, 0, 1)) == partial(1, 3)

        deadline = time.monotonic() + 20.0
        while not await feed_caught_up():
            assert time.monotonic() < deadline, "the feed did not resume"
            await asyncio.sleep(0.1)


@pytest.mark.hazelcast
async def test_connect_with_a_wrong_cluster_name_fails_fast(hazelcast: HazelcastCluster) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no member of Hazelcast cluster 'not-ours'"):
        await connect(hazelcast.members, "not-ours", client_name="t", connect_timeout_s=1.0)
    assert time.monotonic() - started < 5.0


async def test_connect_to_a_closed_port_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:15799"):
        await connect(["127.0.0.1:15799"], "anything", client_name="t", connect_timeout_s=1.0)
    assert time.monotonic() - started < 5.0
