"""The hub: newest snapshot wins, stale epochs are dropped, slow clients never queue."""

from __future__ import annotations

import re

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.api.dashboard import dashboard_dir
from aggregator.ports.bus import Published
from aggregator.services.hub import SERVICE_RESTART, TRY_AGAIN_LATER, SnapshotHub


def message(epoch: int, at: float, leader: str = "pod-a") -> Published:
    return Published(epoch, leader, at, f'{{"epoch": {epoch}, "at": {at}}}'.encode())


async def test_slow_client_gets_only_the_latest() -> None:
    bus = MemoryBus()
    hub = SnapshotHub(bus)
    await hub.start()
    mailbox = hub.connect()
    for i in range(1000):
        await bus.publish(message(1, float(i)))
    received = await mailbox.next()
    assert received is not None
    assert received.generated_at == 999.0
    assert mailbox.replaced == 999


async def test_stale_epochs_and_older_snapshots_are_dropped() -> None:
    bus = MemoryBus()
    hub = SnapshotHub(bus)
    await hub.start()
    await bus.publish(message(2, 10.0, "new"))
    await bus.publish(message(1, 11.0, "deposed"))
    await bus.publish(message(2, 9.0, "new"))
    assert hub.latest is not None
    assert (hub.latest.epoch, hub.latest.leader, hub.latest.generated_at) == (2, "new", 10.0)
    assert hub.stale_dropped == 2
    await bus.publish(message(3, 12.0, "next"))
    assert hub.latest.leader == "next"


async def test_new_client_gets_the_latest_at_once_and_close_says_1012() -> None:
    bus = MemoryBus()
    await bus.publish(message(4, 1.0))
    hub = SnapshotHub(bus)
    await hub.start()
    mailbox = hub.connect()
    first = await mailbox.next()
    assert first is not None
    assert first.epoch == 4
    await hub.close()
    assert await mailbox.next() is None
    assert mailbox.closed_with == SERVICE_RESTART == 1012


def test_the_close_codes_are_the_ones_the_dashboard_knows() -> None:
    source = (dashboard_dir() / "connection.js").read_text()
    exported = {
        name: int(code)
        for name, code in re.findall(r"^export const ([A-Z_]+) = (\d+);", source, re.MULTILINE)
    }
    assert exported["SERVICE_RESTART"] == SERVICE_RESTART
    assert exported["TRY_AGAIN_LATER"] == TRY_AGAIN_LATER
