"""The local Hazelcast members work with hazelcast-python-client's asyncio API.

Every operation here goes through ``hazelcast.asyncio`` (client 5.7: maps, the
cluster service and membership listeners are all available there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from hazelcast.asyncio import HazelcastClient, Map
from hazelcast.core import MemberInfo

from tests.fixtures.kafka_hazelcast import HazelcastCluster, unique_name

pytestmark = pytest.mark.hazelcast

ENTRIES = 2_000


def _addresses(client: HazelcastClient) -> set[str]:
    return {f"{m.address.host}:{m.address.port}" for m in client.cluster_service.get_members()}


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def test_client_sees_both_members(
    hazelcast: HazelcastCluster, hz_client: HazelcastClient
) -> None:
    assert hazelcast.members == ["127.0.0.1:15701", "127.0.0.1:15702"]
    assert _addresses(hz_client) == set(hazelcast.members)
    assert hz_client.lifecycle_service.is_running()


async def test_a_map_written_by_one_client_is_read_by_another(
    hazelcast: HazelcastCluster, hz_client: HazelcastClient
) -> None:
    name = unique_name("partials-shared", prefix="partials")
    written = {f"key-{i}": f"value-{i}" for i in range(ENTRIES)}
    shared: Map[str, str] = await hz_client.get_map(name)
    await shared.put_all(written)

    reader = await HazelcastClient.create_and_start(**hazelcast.client_config())
    try:
        seen: Map[str, str] = await reader.get_map(name)
        read = await seen.get_all(list(written))
    finally:
        await reader.shutdown()

    assert read == written


@pytest.mark.slow
async def test_a_killed_member_loses_no_entry_and_rejoins(
    hazelcast: HazelcastCluster, hz_client: HazelcastClient
) -> None:
    written = {f"key-{i}": i for i in range(ENTRIES)}
    backed_up: Map[str, int] = await hz_client.get_map(unique_name("kill", prefix="partials"))
    control: Map[str, int] = await hz_client.get_map(unique_name("kill", prefix="test-nobackup"))
    await backed_up.put_all(written)
    await control.put_all(written)
    added: list[str] = []
    removed: list[str] = []

    def on_added(member: MemberInfo) -> None:
        added.append(f"{member.address.host}:{member.address.port}")

    def on_removed(member: MemberInfo) -> None:
        removed.append(f"{member.address.host}:{member.address.port}")

    hz_client.cluster_service.add_listener(member_added=on_added, member_removed=on_removed)
    victim = hazelcast.members[0]  # the oldest member, the cluster's master

    hazelcast.kill_member(0)
    await _until(lambda: _addresses(hz_client) == {hazelcast.members[1]}, "member removed")

    assert removed == [victim]
    assert await backed_up.size() == ENTRIES
    assert await backed_up.get_all(list(written)) == written
    # The control map had no backup: the partitions the victim owned are gone,
    # so the test above really exercised the backups.
    assert 0 < await control.size() < ENTRIES

    # Blocks until the member has joined; off the event loop so the client keeps running.
    await asyncio.to_thread(hazelcast.start_member, 0)
    await _until(lambda: _addresses(hz_client) == set(hazelcast.members), "member rejoined")

    assert added == [victim]
    assert await backed_up.size() == ENTRIES
    assert await backed_up.get_all(list(written)) == written
    # Writes keep working with the partitions spread over both members again.
    await backed_up.put("after-rejoin", -1)
    assert await backed_up.get("after-rejoin") == -1
