"""The SnapshotBus and MemberRegistry contracts: the same cases on the memory
adapters (``MemoryBus``, ``MemoryMembers``) and on Hazelcast (``HazelcastBus``,
``HazelcastMembers``, one client per pod, map and topic names unique per test).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Protocol

import pytest
from hazelcast.asyncio import HazelcastClient

from aggregator.adapters.hazelcast import HazelcastBus, HazelcastMembers, connect
from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.members import MemoryMembers
from aggregator.ports.bus import Published, SnapshotBus
from aggregator.ports.members import MemberInfo, MemberRegistry
from tests.fixtures.kafka_hazelcast import HazelcastCluster, unique_name

DEADLINE_S = 15.0

pytestmark = pytest.mark.parametrize(
    "shared_kind", ["memory", pytest.param("hazelcast", marks=pytest.mark.hazelcast)], indirect=True
)


class Harness(Protocol):
    async def bus(self, pod: str) -> SnapshotBus:
        """The bus as pod ``pod`` sees it."""
        ...

    async def registry(self, pod: str) -> MemberRegistry: ...


class MemoryHarness:
    def __init__(self) -> None:
        self.shared_bus = MemoryBus()
        self.shared_members = MemoryMembers(SystemClock())

    async def bus(self, pod: str) -> SnapshotBus:
        return self.shared_bus

    async def registry(self, pod: str) -> MemberRegistry:
        return self.shared_members


class HazelcastHarness:
    def __init__(self, cluster: HazelcastCluster, stack: AsyncExitStack, hint: str) -> None:
        self.cluster = cluster
        self.stack = stack
        self.results = unique_name(hint, prefix="results")
        self.topic = unique_name(hint, prefix="snapshots")
        self.members = unique_name(hint, prefix="members")

    async def _client(self, pod: str) -> HazelcastClient:
        client = await connect(self.cluster.members, self.cluster.cluster_name, client_name=pod)
        self.stack.push_async_callback(client.shutdown)
        return client

    async def bus(self, pod: str) -> SnapshotBus:
        client = await self._client(pod)
        return HazelcastBus(client, map_name=self.results, topic_name=self.topic)

    async def registry(self, pod: str) -> MemberRegistry:
        return HazelcastMembers(await self._client(pod), map_name=self.members)


@pytest.fixture
async def shared_kind(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    cluster: HazelcastCluster = request.getfixturevalue("hazelcast")
    async with AsyncExitStack() as stack:
        yield HazelcastHarness(cluster, stack, request.node.name)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.05)


def snapshot(epoch: int, n: int) -> Published:
    return Published(epoch, f"pod-{epoch}_x", 1_700_000_000.0 + n, b'{"n": %d}' % n)


async def test_published_snapshots_reach_every_subscriber_and_stay_latest(
    shared_kind: Harness,
) -> None:
    leader = await shared_kind.bus("pod-1")
    follower = await shared_kind.bus("pod-2")
    assert await follower.latest() is None
    got_1: list[Published] = []
    got_2: list[Published] = []
    sub_1 = await leader.subscribe(got_1.append)
    sub_2 = await follower.subscribe(got_2.append)

    sent = [snapshot(3, n) for n in range(3)]
    for message in sent:
        await leader.publish(message)

    async def delivered() -> bool:
        return got_1 == sent and got_2 == sent

    await until(delivered, "every subscriber got every snapshot, in order")
    assert await follower.latest() == sent[-1]
    assert await leader.latest() == sent[-1]

    await sub_2.close()
    newer = snapshot(4, 9)
    await leader.publish(newer)

    async def first_got_it() -> bool:
        return got_1[-1:] == [newer]

    await until(first_got_it, "the open subscription got the newer snapshot")
    await asyncio.sleep(0.2)
    assert got_2 == sent  # closed: nothing more
    assert await follower.latest() == newer
    await sub_1.close()


async def test_members_heartbeat_list_leave_and_expire(shared_kind: Harness) -> None:
    pod_b, pod_a = await shared_kind.registry("pod-b"), await shared_kind.registry("pod-a")
    a = MemberInfo("pod-a", "pod-a_1", 1.0, 2.0, (0, 1, 2), 1500.5, 12, True)
    b = MemberInfo("pod-b", "pod-b_1", 1.5, 2.5, (3, 4, 5), 900.0, 0, False)
    await pod_b.heartbeat(b, ttl_s=30.0)
    await pod_a.heartbeat(a, ttl_s=30.0)
    assert await pod_b.members() == [a, b]  # sorted by pod

    # A heartbeat replaces the member's record.
    a_later = replace(a, heartbeat_at=4.0, partitions=(0, 1), lag=3)
    await pod_a.heartbeat(a_later, ttl_s=30.0)
    assert await pod_b.members() == [a_later, b]

    await pod_a.leave(a.identity)
    assert await pod_b.members() == [b]
    await pod_a.leave("never-joined")  # harmless

    # A pod that stops heartbeating drops out by itself.  (Hazelcast keeps entry
    # times in whole seconds: a TTL may end up to 1 s early.)
    await pod_b.heartbeat(replace(b, heartbeat_at=5.0), ttl_s=2.0)
    assert [m.identity for m in await pod_a.members()] == ["pod-b_1"]

    async def expired() -> bool:
        return await pod_a.members() == []

    await until(expired, "the member without heartbeat expired")
