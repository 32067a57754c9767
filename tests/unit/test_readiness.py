"""Readiness is decided once, in ``Pod.not_ready_because``: ``/readyz`` shows its
reasons and the member list its verdict."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from aggregator.api.app import create_app
from aggregator.services import pod as pod_module
from aggregator.services.elector import Elector
from aggregator.services.map_stage import MapStage
from aggregator.services.pod import Pod
from harness.memory_pod import OnePod, memory_pod


@pytest.fixture
def pod() -> Pod:
    return memory_pod()


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
