"""The PartialStore / PartialFeed contract: the same cases on the memory store
(``MemoryStoreServer`` + ``MemoryStoreClient`` + ``MemoryFeed``) and on Hazelcast
(``HazelcastStore`` + ``HazelcastFeed``).

``store_kind`` (indirect) gives a ``Harness`` factory: ``pod()`` is a new pod's
store client, ``feed()`` the reducer's feed, ``unavailable()`` stores whose
server is gone.  Every Hazelcast harness uses its own map (``partials-*``, so the
cluster's backup-count 1 applies) and its own client per pod.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Protocol

import pytest
from hazelcast.asyncio import HazelcastClient

from aggregator.adapters.hazelcast import HazelcastFeed, HazelcastStore, connect
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.core.partial import Agg, Partial
from aggregator.ports.store import PartialFeed, PartialKey, PartialStore, StoreUnavailable
from tests.fixtures.kafka_hazelcast import HazelcastCluster, unique_name

SOURCE = "crashes"
DIMS = 2
DEADLINE_S = 15.0

pytestmark = pytest.mark.parametrize(
    "store_kind", ["memory", pytest.param("hazelcast", marks=pytest.mark.hazelcast)], indirect=True
)


class Harness(Protocol):
    async def pod(self, name: str) -> PartialStore: ...

    async def feed(self) -> PartialFeed: ...

    async def unavailable(self) -> list[PartialStore]:
        """Stores (already built) whose server cannot be reached."""
        ...


Factory = Callable[..., Awaitable[Harness]]


class MemoryHarness:
    def __init__(self, ttl_s: float) -> None:
        self.server = MemoryStoreServer(SystemClock(), ttl_s)

    async def pod(self, name: str) -> PartialStore:
        return MemoryStoreClient(self.server)

    async def feed(self) -> PartialFeed:
        return MemoryFeed(self.server)

    async def unavailable(self) -> list[PartialStore]:
        gone = MemoryStoreServer(SystemClock(), 60.0)
        gone.available = False
        return [MemoryStoreClient(gone)]


class HazelcastHarness:
    def __init__(
        self, cluster: HazelcastCluster, stack: AsyncExitStack, map_name: str, ttl_s: float
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.map_name = map_name
        self.ttl_s = ttl_s

    async def _client(self, name: str) -> HazelcastClient:
        client = await connect(self.cluster.members, self.cluster.cluster_name, client_name=name)
        self.stack.push_async_callback(client.shutdown)
        return client

    async def pod(self, name: str) -> PartialStore:
        client = await self._client(name)
        return HazelcastStore(client, writer=name, ttl_s=self.ttl_s, map_name=self.map_name)

    async def feed(self) -> PartialFeed:
        feed = HazelcastFeed(await self._client("reducer"), map_name=self.map_name)
        self.stack.push_async_callback(feed.close)
        return feed

    async def unavailable(self) -> list[PartialStore]:
        # A client whose cluster went away for good (shut down), for the mapping
        # of a dead client's errors; connect() itself is checked separately.
        client = await HazelcastClient.create_and_start(**self.cluster.client_config())
        store = HazelcastStore(client, writer="gone", ttl_s=60.0, map_name=self.map_name)
        await store.load(SOURCE, 0)  # opened while the cluster was there
        await client.shutdown()
        return [store]


@pytest.fixture
async def store_kind(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    async with AsyncExitStack() as stack:
        if request.param == "memory":

            async def memory(ttl_s: float = 60.0) -> Harness:
                return MemoryHarness(ttl_s)

            yield memory
            return
        cluster: HazelcastCluster = request.getfixturevalue("hazelcast")

        async def hazelcast(ttl_s: float = 60.0) -> Harness:
            name = unique_name(request.node.name, prefix="partials")
            return HazelcastHarness(cluster, stack, name, ttl_s)

        yield hazelcast


def partial(bucket: int, count: int, *, offset: int | None = None, app: str = "app-1") -> Partial:
    """A small partial: ``count`` events of one app, highest offset ``offset``."""
    made = Partial(bucket, DIMS, count - 1 if offset is None else offset)
    agg = Agg()
    agg.count = agg.vcount = count
    agg.vsum, agg.vmin, agg.vmax = 10.0 * count, 1.0, 19.0
    agg.hist = {3: count}
    agg.regs = {7: 2, 11: 1}
    made.total.merge_from(agg)
    made.by[0][app] = agg.copy()
    made.by[1]["android"] = agg.copy()
    made.drop("late")
    return made


def by_bucket(partials: list[Partial]) -> dict[int, Partial]:
    return {p.bucket: p for p in partials}


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def test_load_returns_what_was_written(store_kind: Factory) -> None:
    harness = await store_kind()
    writer = await harness.pod("pod-a")
    assert await writer.load(SOURCE, 0) == []
    written = [partial(100, 3), partial(101, 5, app="app-2")]
    assert await writer.write(SOURCE, 0, written) == []
    assert await writer.write(SOURCE, 1, [partial(100, 7)]) == []
    assert await writer.write("other-source", 0, [partial(100, 9)]) == []

    reader = await harness.pod("pod-b")
    assert by_bucket(await reader.load(SOURCE, 0)) == by_bucket(written)
    assert await reader.load(SOURCE, 1) == [partial(100, 7)]
    assert await reader.load(SOURCE, 2) == []
    # The writer's own later writes go through: it expects what it wrote.
    assert await writer.write(SOURCE, 0, [partial(100, 4), partial(102, 1)]) == []
    assert by_bucket(await reader.load(SOURCE, 0)) == by_bucket(
        [partial(100, 4), written[1], partial(102, 1)]
    )


async def test_a_new_owner_fences_the_old_one(store_kind: Factory) -> None:
    harness = await store_kind()
    old = await harness.pod("pod-a")
    assert await old.write(SOURCE, 0, [partial(100, 3), partial(101, 1)]) == []

    new = await harness.pod("pod-b")
    await new.load(SOURCE, 0)
    assert await new.write(SOURCE, 0, [partial(100, 5)]) == []

    # The deposed writer still believes bucket 100 holds its 3 events.
    assert await old.write(SOURCE, 0, [partial(100, 4), partial(101, 2)]) == [100]
    stored = by_bucket(await (await harness.pod("observer")).load(SOURCE, 0))
    assert stored[100] == partial(100, 5)  # unchanged by the fenced write
    assert stored[101] == partial(101, 2)  # nobody else wrote this one: not fenced
    # The new owner keeps writing.
    assert await new.write(SOURCE, 0, [partial(100, 6)]) == []


async def test_two_writers_creating_the_same_entry_one_wins(store_kind: Factory) -> None:
    harness = await store_kind()
    first, second = await harness.pod("pod-a"), await harness.pod("pod-b")
    outcomes = await asyncio.gather(
        first.write(SOURCE, 0, [partial(100, 1)]),
        second.write(SOURCE, 0, [partial(100, 2)]),
    )
    assert sorted(outcomes) == [[], [100]]
    winner = 1 if outcomes[0] == [] else 2
    stored = await (await harness.pod("observer")).load(SOURCE, 0)
    assert stored == [partial(100, winner)]
    # The loser stays fenced for that entry until it reloads it.
    loser = second if winner == 1 else first
    assert await loser.write(SOURCE, 0, [partial(100, 9)]) == [100]
    await loser.load(SOURCE, 0)
    assert await loser.write(SOURCE, 0, [partial(100, 9)]) == []


async def test_forget_drops_expectations_until_the_next_load(store_kind: Factory) -> None:
    harness = await store_kind()
    first, second = await harness.pod("pod-a"), await harness.pod("pod-b")
    assert await first.write(SOURCE, 0, [partial(100, 1)]) == []
    assert await first.write(SOURCE, 1, [partial(100, 1)]) == []

    first.forget(SOURCE, 0)
    # Without expectations an existing entry looks like someone else's.
    assert await first.write(SOURCE, 0, [partial(100, 2)]) == [100]
    assert await second.load(SOURCE, 0) == [partial(100, 1)]
    # Other partitions keep theirs.
    assert await first.write(SOURCE, 1, [partial(100, 2)]) == []
    # A load makes the stored versions expected again.
    await first.load(SOURCE, 0)
    assert await first.write(SOURCE, 0, [partial(100, 3)]) == []
    assert await second.load(SOURCE, 0) == [partial(100, 3)]


async def test_feed_reads_everything_then_only_changes(store_kind: Factory) -> None:
    harness = await store_kind()
    writer = await harness.pod("pod-a")
    assert await writer.write(SOURCE, 0, [partial(100, 1), partial(101, 1)]) == []
    assert await writer.write(SOURCE, 1, [partial(100, 1)]) == []

    feed = await harness.feed()
    opened = dict(await feed.open())
    assert opened == {
        PartialKey(SOURCE, 0, 100): partial(100, 1),
        PartialKey(SOURCE, 0, 101): partial(101, 1),
        PartialKey(SOURCE, 1, 100): partial(100, 1),
    }

    assert await writer.write(SOURCE, 0, [partial(100, 2)]) == []
    assert await writer.write(SOURCE, 0, [partial(100, 3)]) == []
    assert await writer.write(SOURCE, 2, [partial(105, 1)]) == []
    expected = {
        PartialKey(SOURCE, 0, 100): partial(100, 3),
        PartialKey(SOURCE, 2, 105): partial(105, 1),
    }
    seen: dict[PartialKey, Partial] = {}

    async def caught_up() -> bool:
        changes = list(await feed.changes())
        assert {key for key, _ in changes} <= set(expected)  # never an unchanged entry
        seen.update(changes)
        return seen == expected

    await until(caught_up, "the feed reports both changes with their latest state")
    await asyncio.sleep(0.3)
    assert list(await feed.changes()) == []


async def test_entries_expire_after_their_ttl(store_kind: Factory) -> None:
    # Hazelcast keeps entry times in whole seconds: an entry may expire up to 1 s
    # before its TTL, so the timings here leave that much room.
    harness = await store_kind(ttl_s=2.0)
    writer = await harness.pod("pod-a")
    assert await writer.write(SOURCE, 0, [partial(100, 1)]) == []
    await asyncio.sleep(0.3)
    # The replace path too must leave a TTL on the entry (an IMap replace drops it).
    assert await writer.write(SOURCE, 0, [partial(100, 2), partial(101, 1)]) == []
    written = time.monotonic()
    reader = await harness.pod("pod-b")
    assert len(await reader.load(SOURCE, 0)) == 2

    async def gone() -> bool:
        return await reader.load(SOURCE, 0) == []

    await until(gone, "both entries expired")
    assert time.monotonic() - written > 0.9
    feed = await harness.feed()
    assert list(await feed.open()) == []


async def test_unreachable_store_raises_store_unavailable(store_kind: Factory) -> None:
    harness = await store_kind()
    for store in await harness.unavailable():
        with pytest.raises(StoreUnavailable):
            await store.load(SOURCE, 0)
        with pytest.raises(StoreUnavailable):
            await store.write(SOURCE, 0, [partial(100, 1)])
