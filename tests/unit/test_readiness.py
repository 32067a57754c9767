"""Readiness is decided once, in ``Pod.not_ready_because``: ``/readyz`` shows its
reasons and the member list its verdict."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.members import MemoryMembers
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.api.app import create_app
from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.core.events import EventSchema
from aggregator.services import pod as pod_module
from aggregator.services.elector import Elector
from aggregator.services.map_stage import MapStage
from aggregator.services.pod import Pod, PodPorts, PodSettings
from aggregator.services.reduce_stage import ReduceSettings


class OnePod:
    def __init__(self, pod: Pod) -> None:
        self.pod = pod

    def front(self) -> Pod | None:
        return self.pod

    def pods(self) -> list[Pod]:
        return [self.pod]


@pytest.fixture
def pod() -> Pod:
    clock = ManualClock()
    schema = EventSchema()
    store = MemoryStoreServer(clock, ttl_s=600)
    ports = PodPorts(
        source=MemoryConsumer(MemoryLog(clock, partitions=1), "g", "m"),
        store=MemoryStoreClient(store),
        feed=MemoryFeed(store),
        lease=MemoryLeaseClient(MemoryLeaseServer(), clock=clock),
        bus=MemoryBus(),
        registry=MemoryMembers(clock),
        clock=clock,
    )
    settings = PodSettings(
        fold=FoldSettings(schema, 1, 60, 10.0, 60.0, 65536),
        reduce=ReduceSettings(schema.dimensions, 60, 1, 0.25, 5),
        flush_interval_s=0.2,
        timings=ElectionTimings(3.0, 2.0, 0.5),
    )
    return Pod("pod-0", ports, settings)


@pytest.fixture
def client(pod: Pod) -> Iterator[TestClient]:
    with TestClient(create_app(OnePod(pod))) as test_client:
        yield test_client


def set_health(
    monkeypatch: pytest.MonkeyPatch, *, alive: bool, map_ready: bool, lease_healthy: bool, pod: Pod
) -> None:
    pod.alive = alive
    monkeypatch.setattr(MapStage, "ready", property(lambda _: map_ready))
    monkeypatch.setattr(Elector, "healthy", lambda _: lease_healthy)


@pytest.mark.parametrize(
    ("alive", "map_ready", "lease_healthy", "why"),
    [
        (True, True, True, []),
        (True, False, True, [pod_module.NOT_READY_MAP]),
        (True, True, False, [pod_module.NOT_READY_LEASE]),
        (False, True, True, [pod_module.NOT_READY_STOPPING]),
        (
            False,
            False,
            False,
            [pod_module.NOT_READY_MAP, pod_module.NOT_READY_LEASE, pod_module.NOT_READY_STOPPING],
        ),
    ],
)
async def test_readyz_and_the_member_list_give_the_pods_one_verdict(
    monkeypatch: pytest.MonkeyPatch,
    pod: Pod,
    client: TestClient,
    alive: bool,
    map_ready: bool,
    lease_healthy: bool,
    why: list[str],
) -> None:
    set_health(monkeypatch, alive=alive, map_ready=map_ready, lease_healthy=lease_healthy, pod=pod)
    assert pod.not_ready_because() == why
    assert pod.ready() is (not why)
    answer = client.get("/readyz")
    assert answer.json() == {"ready": not why, "why": why}
    assert answer.status_code == (503 if why else 200)
    assert (await pod.describe()).ready is (not why)
