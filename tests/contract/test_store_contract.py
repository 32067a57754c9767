"""The PartialStore / PartialFeed contract: the same cases on the memory store
(``MemoryStoreServer`` + ``MemoryStoreClient`` + ``MemoryFeed``) and on Hazelcast
(``HazelcastStore`` + ``HazelcastFeed``).

The map stage writes deltas, so a store adds what it is given: every case checks
sums (``summed``), and the feed's entries by what they add up to per bucket
(``per_bucket``), as a bucket may come as several entries (Hazelcast's segments,
which ``seal_bytes`` makes appear after a few writes).

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
from aggregator.adapters.hazelcast.store import SEAL_BYTES
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
    seals: bool
    """Whether this store seals big buckets and appends segments (``seal_bytes``)."""

    async def pod(self, name: str) -> PartialStore: ...

    async def feed(self) -> PartialFeed: ...

    async def unavailable(self) -> list[PartialStore]:
        """Stores (already built) whose server cannot be reached."""
        ...


Factory = Callable[..., Awaitable[Harness]]


class MemoryHarness:
    def __init__(self, ttl_s: float) -> None:
        self.seals = False
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
        self,
        cluster: HazelcastCluster,
        stack: AsyncExitStack,
        map_name: str,
        ttl_s: float,
        seal_bytes: int,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.map_name = map_name
        self.ttl_s = ttl_s
        self.seal_bytes = seal_bytes
        self.seals = seal_bytes < SEAL_BYTES

    async def _client(self, name: str) -> HazelcastClient:
        client = await connect(self.cluster.members, self.cluster.cluster_name, client_name=name)
        self.stack.push_async_callback(client.shutdown)
        return client

    async def pod(self, name: str) -> PartialStore:
        client = await self._client(name)
        return HazelcastStore(
            client,
            writer=name,
            ttl_s=self.ttl_s,
            map_name=self.map_name,
            seal_bytes=self.seal_bytes,
        )

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

            async def memory(ttl_s: float = 60.0, seal_bytes: int = SEAL_BYTES) -> Harness:
                return MemoryHarness(ttl_s)

            yield memory
            return
        cluster: HazelcastCluster = request.getfixturevalue("hazelcast")

        async def hazelcast(ttl_s: float = 60.0, seal_bytes: int = SEAL_BYTES) -> Harness:
            name = unique_name(request.node.name, prefix="partials")
            return HazelcastHarness(cluster, stack, name, ttl_s, seal_bytes)

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


def summed(*deltas: Partial) -> Partial:
    """What the store holds after these deltas of one bucket."""
    total = deltas[0].copy()
    for delta in deltas[1:]:
        total.merge_from(delta)
    return total


def per_bucket(entries: dict[PartialKey, Partial]) -> dict[PartialKey, Partial]:
    """The feed's entries added up per bucket (segments into their bucket)."""
    totals: dict[PartialKey, Partial] = {}
    for key, value in sorted(entries.items()):
        bucket = key._replace(segment=0)
        if bucket in totals:
            totals[bucket].merge_from(value)
        else:
            totals[bucket] = value.copy()
    return totals


def wide(bucket: int, keys: range, offset: int) -> Partial:
    """A delta of one event for each app in ``keys``: a few of them pass ``SMALL_SEAL``."""
    made = Partial(bucket, DIMS, offset)
    for key in keys:
        one = partial(bucket, 1, app=f"app-{key}")
        made.merge_from(one)
    made.offset = offset
    return made


SMALL_SEAL = 4_000
"""A seal threshold that ``wide`` deltas of 40 keys pass after a few writes."""


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def test_writes_add_up_and_load_returns_the_sums(store_kind: Factory) -> None:
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
    # The writer's own later writes go through (it expects what it wrote), and add.
    later = partial(100, 4, offset=10, app="app-3")
    assert await writer.write(SOURCE, 0, [later, partial(102, 1)]) == []
    assert by_bucket(await reader.load(SOURCE, 0)) == by_bucket(
        [summed(written[0], later), written[1], partial(102, 1)]
    )
    assert (await reader.load(SOURCE, 0))[0].offset == 10  # the highest of the deltas


async def test_a_new_owner_fences_the_old_one(store_kind: Factory) -> None:
    harness = await store_kind()
    old = await harness.pod("pod-a")
    assert await old.write(SOURCE, 0, [partial(100, 3), partial(101, 1)]) == []

    new = await harness.pod("pod-b")
    await new.load(SOURCE, 0)
    assert await new.write(SOURCE, 0, [partial(100, 5, offset=8)]) == []

    # The deposed writer still believes bucket 100 holds only its 3 events.
    assert await old.write(SOURCE, 0, [partial(100, 4), partial(101, 2, offset=5)]) == [100]
    stored = by_bucket(await (await harness.pod("observer")).load(SOURCE, 0))
    assert stored[100] == summed(partial(100, 3), partial(100, 5, offset=8))  # not added to
    assert stored[101] == summed(partial(101, 1), partial(101, 2, offset=5))  # nobody else's
    # The new owner keeps writing.
    assert await new.write(SOURCE, 0, [partial(100, 6, offset=20)]) == []


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
    stored = await (await harness.pod("observer")).load(SOURCE, 0)
    assert stored == [summed(partial(100, winner), partial(100, 9))]


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
    # A load makes what is stored expected again.
    await first.load(SOURCE, 0)
    assert await first.write(SOURCE, 0, [partial(100, 3)]) == []
    assert await second.load(SOURCE, 0) == [summed(partial(100, 1), partial(100, 3))]


async def test_big_buckets_add_up_across_a_seal_and_a_change_of_writer(
    store_kind: Factory,
) -> None:
    """Hazelcast seals a bucket past ``seal_bytes`` and appends its later deltas as
    segments; at the port, nothing shows but the sums: load after a seal, a new
    owner that goes on where the old one stopped, the old one fenced (its next
    segment is taken), and a feed whose entries add up to the truth."""
    harness = await store_kind(seal_bytes=SMALL_SEAL)
    old = await harness.pod("pod-a")
    deltas = [wide(100, range(i * 40, i * 40 + 40), i) for i in range(4)]
    for delta in deltas:
        assert await old.write(SOURCE, 0, [delta, partial(101, 1, offset=delta.offset)]) == []
    small = summed(*(partial(101, 1, offset=d.offset) for d in deltas))
    assert by_bucket(await (await harness.pod("observer")).load(SOURCE, 0)) == {
        100: summed(*deltas),
        101: small,
    }

    new = await harness.pod("pod-b")
    assert by_bucket(await new.load(SOURCE, 0))[100] == summed(*deltas)
    taken_over = wide(100, range(160, 200), 10)
    assert await new.write(SOURCE, 0, [taken_over]) == []
    assert await old.write(SOURCE, 0, [wide(100, range(500, 540), 11)]) == [100]
    assert await new.write(SOURCE, 0, [partial(100, 2, offset=12)]) == []
    truth = {
        PartialKey(SOURCE, 0, 100): summed(*deltas, taken_over, partial(100, 2, offset=12)),
        PartialKey(SOURCE, 0, 101): small,
    }
    assert by_bucket(await (await harness.pod("observer")).load(SOURCE, 0)) == {
        key.bucket: value for key, value in truth.items()
    }
    feed = await harness.feed()
    entries = dict(await feed.open())
    assert per_bucket(entries) == truth
    if harness.seals:
        assert len(entries) > 2  # the big bucket came as segments


@pytest.mark.parametrize("seal_bytes", [SEAL_BYTES, SMALL_SEAL], ids=["whole", "sealing"])
async def test_feed_reads_everything_then_only_changes(
    store_kind: Factory, seal_bytes: int
) -> None:
    harness = await store_kind(seal_bytes=seal_bytes)
    writer = await harness.pod("pod-a")
    first = wide(100, range(40), 1)
    assert await writer.write(SOURCE, 0, [first, partial(101, 1)]) == []
    assert await writer.write(SOURCE, 1, [partial(100, 1)]) == []

    feed = await harness.feed()
    opened = dict(await feed.open())
    assert per_bucket(opened) == {
        PartialKey(SOURCE, 0, 100): first,
        PartialKey(SOURCE, 0, 101): partial(101, 1),
        PartialKey(SOURCE, 1, 100): partial(100, 1),
    }

    more = [wide(100, range(40 * i, 40 * i + 40), i) for i in range(2, 6)]
    for delta in more:
        assert await writer.write(SOURCE, 0, [delta]) == []
    assert await writer.write(SOURCE, 2, [partial(105, 1)]) == []
    expected = {
        PartialKey(SOURCE, 0, 100): summed(first, *more),
        PartialKey(SOURCE, 0, 101): partial(101, 1),
        PartialKey(SOURCE, 1, 100): partial(100, 1),
        PartialKey(SOURCE, 2, 105): partial(105, 1),
    }
    seen = dict(opened)

    async def caught_up() -> bool:
        changes = list(await feed.changes())
        # never an unchanged entry
        assert {k._replace(segment=0) for k, _ in changes} <= {
            PartialKey(SOURCE, 0, 100),
            PartialKey(SOURCE, 2, 105),
        }
        seen.update(changes)
        return per_bucket(seen) == expected

    await until(caught_up, "the feed reports the changes, adding up to the stored sums")
    await asyncio.sleep(0.3)
    assert list(await feed.changes()) == []
    if harness.seals and seal_bytes == SMALL_SEAL:
        assert any(key.segment for key in seen)


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
