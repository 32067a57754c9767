"""Deltas, property-style: a partition's events folded by one or two writers
(``PartitionState``, the map stage's flush, fence and resync rules) into a
store that adds deltas, with replies lost after the write landed and a takeover
by a second writer at any point, add up to each event counted exactly once.

Both stores: the memory store, and the Hazelcast store on the fake IMap of
test_hazelcast_store with a seal threshold drawn too (0: every bucket seals at
its first write and appends from then on).
"""

from __future__ import annotations

import asyncio
from typing import cast

from hazelcast.asyncio import HazelcastClient
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.adapters.hazelcast import HazelcastStore
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import PartitionState
from aggregator.core.events import Event
from aggregator.ports.store import PartialStore, StoreUnavailable
from tests.unit.test_hazelcast_store import FakeClient, FakeMap

SOURCE = "crashes"
APPS = "abc"


class Writer:
    """One pod's map stage, reduced to its rules for one partition."""

    def __init__(self, store: PartialStore, lose: object) -> None:
        self.store = store
        self.state = PartitionState(1)
        self.position = 0
        self._lose = lose

    def lose_next_reply(self) -> None:
        if isinstance(self._lose, FakeMap):
            self._lose.lose_responses = 1
        else:
            cast(MemoryStoreClient, self.store).lose_replies = 1

    async def resync(self, committed: int) -> None:
        self.store.forget(SOURCE, 0)
        self.state = PartitionState(1)
        self.state.load(await self.store.load(SOURCE, 0))
        self.position = committed

    def fold(self, log: list[tuple[int, str]], count: int) -> None:
        for offset in range(self.position, min(len(log), self.position + count)):
            bucket, app = log[offset]
            if not self.state.counted(bucket, offset):
                self.state.add_event(bucket, offset, Event(float(bucket), (app,), None, None))
            self.position = offset + 1

    async def flush(self) -> bool:
        """The map stage's flush of the partition: True when it may commit."""
        deltas = self.state.roll_up()
        if not deltas:
            return True
        try:
            fenced = await self.store.write(SOURCE, 0, deltas)
        except StoreUnavailable:
            fenced = [-1]  # unknown: resynced like a fence
        if fenced:
            return False
        self.state.stored(p.bucket for p in deltas)
        return True


def stores(kind: str, seal_bytes: int) -> tuple[Writer, Writer, PartialStore]:
    if kind == "memory":
        server = MemoryStoreServer(SystemClock(), 600.0)
        return (
            *(Writer(MemoryStoreClient(server), None) for _ in "ab"),
            MemoryStoreClient(server),
        )  # type: ignore[return-value]
    imap = FakeMap()
    client = cast(HazelcastClient, FakeClient(imap))

    def store(name: str) -> HazelcastStore:
        return HazelcastStore(client, writer=name, ttl_s=60.0, seal_bytes=seal_bytes)

    return Writer(store("a"), imap), Writer(store("b"), imap), store("observer")


@settings(max_examples=300, deadline=None)
@given(
    log=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(APPS)), min_size=1, max_size=60),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["fold", "flush", "lose a reply", "take over"]),
            st.integers(0, 1),
            st.integers(1, 12),
        ),
        max_size=40,
    ),
    kind=st.sampled_from(["memory", "hazelcast"]),
    seal_bytes=st.sampled_from([0, 150, 400, 1 << 20]),
)
def test_deltas_from_any_interleaving_add_up_to_each_event_once(
    log: list[tuple[int, str]],
    steps: list[tuple[str, int, int]],
    kind: str,
    seal_bytes: int,
) -> None:
    asyncio.run(_run(log, steps, kind, seal_bytes))


async def _run(
    log: list[tuple[int, str]], steps: list[tuple[str, int, int]], kind: str, seal_bytes: int
) -> None:
    first, second, observer = stores(kind, seal_bytes)
    writers = (first, second)
    owner = 0
    committed = 0
    for action, who, count in steps:
        writer = writers[who]
        if action == "fold":
            writer.fold(log, count)
        elif action == "lose a reply":
            writer.lose_next_reply()
        elif action == "take over" and who != owner:
            owner = who  # the other one is a zombie now: it goes on, unaware
            await writer.resync(committed)
        elif action == "flush":
            if await writer.flush():
                if who == owner:
                    committed = writer.position  # a zombie's commit is refused
            else:
                await writer.resync(committed)
    # The owner reads to the end and flushes until it may commit everything.
    last = writers[owner]
    for _ in range(5):
        last.fold(log, len(log))
        if await last.flush():
            break
        await last.resync(committed)
    else:
        raise AssertionError("the owner never managed a clean flush")
    stored = {p.bucket: p for p in await observer.load(SOURCE, 0)}
    for bucket in {b for b, _ in log}:
        events = [app for b, app in log if b == bucket]
        partial = stored[bucket]
        assert partial.total.count == len(events), (bucket, partial)
        for app in APPS:
            agg = partial.by[0].get(app)
            assert (agg.count if agg else 0) == events.count(app)
        assert partial.offset == max(o for o, (b, _) in enumerate(log) if b == bucket)
