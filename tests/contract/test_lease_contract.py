"""The Lease port's contract: the same cases on the memory lease and on a real
coordination.k8s.io/v1 Lease (the local kube-apiserver).

Each case gets a fresh lease; ``backend.client()`` opens another pod's
connection to the same lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest

from aggregator.adapters.kubernetes import KubernetesLease, from_environment
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.ports.lease import LeaseClient, LeaseConflict, LeaseSpec
from tests.fixtures.kube import KubeApi

LEASE = "stream-aggregator"
REQUEST_TIMEOUT_S = 2.0

HELD = LeaseSpec(
    holder_identity="pod-a_x1y2",
    lease_duration_seconds=15,
    acquire_time=1_700_000_000.123456,
    renew_time=1_700_000_007.0,  # a whole second: the fraction must still be written
    lease_transitions=3,
)
RELEASED = LeaseSpec(
    holder_identity="",
    lease_duration_seconds=1,
    acquire_time=HELD.acquire_time,
    renew_time=1_700_000_009.000001,
    lease_transitions=3,
)


@dataclass
class Backend:
    kind: str
    client: Callable[[], LeaseClient]
    opened: list[KubernetesLease] = field(default_factory=list)


@pytest.fixture(params=["memory", pytest.param("kubernetes", marks=pytest.mark.kube)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        server = MemoryLeaseServer()
        yield Backend(
            "memory", lambda: MemoryLeaseClient(server, LEASE, "contract", clock=SystemClock())
        )
        return
    kube_api: KubeApi = request.getfixturevalue("kube_api")
    namespace: str = request.getfixturevalue("kube_namespace")
    opened: list[KubernetesLease] = []

    def connect() -> LeaseClient:
        lease = from_environment(LEASE, namespace, str(kube_api.kubeconfig), REQUEST_TIMEOUT_S)
        opened.append(lease)
        return lease

    yield Backend("kubernetes", connect, opened)
    for lease in opened:
        lease.close()


async def test_get_on_an_absent_lease_is_none(backend: Backend) -> None:
    assert await backend.client().get() is None


@pytest.mark.parametrize(
    "spec",
    [
        HELD,
        RELEASED,
        LeaseSpec(holder_identity=None, lease_duration_seconds=15, acquire_time=None,
                  renew_time=None, lease_transitions=0),
    ],
    ids=["held", "released", "bare"],
)  # fmt: skip
async def test_create_then_get_round_trips_every_field(backend: Backend, spec: LeaseSpec) -> None:
    lease = backend.client()
    created = await lease.create(spec)
    assert created.spec == spec
    assert created.resource_version
    read = await backend.client().get()
    assert read == created


async def test_create_twice_is_a_conflict(backend: Backend) -> None:
    first = await backend.client().create(HELD)
    with pytest.raises(LeaseConflict):
        await backend.client().create(replace(HELD, holder_identity="pod-b_z9"))
    assert await backend.client().get() == first


async def test_replace_with_a_stale_resource_version_is_a_conflict(backend: Backend) -> None:
    pod_a, pod_b = backend.client(), backend.client()
    created = await pod_a.create(HELD)
    taken = await pod_b.replace(
        created.resource_version,
        replace(HELD, holder_identity="pod-b_z9", lease_transitions=4),
    )
    with pytest.raises(LeaseConflict):
        await pod_a.replace(created.resource_version, replace(HELD, renew_time=1_700_000_010.5))
    assert await pod_a.get() == taken


async def test_replace_with_the_current_resource_version_writes_and_moves_it(
    backend: Backend,
) -> None:
    lease = backend.client()
    created = await lease.create(HELD)
    renewed_spec = replace(HELD, renew_time=1_700_000_009.5)
    renewed = await lease.replace(created.resource_version, renewed_spec)
    assert renewed.spec == renewed_spec
    assert renewed.resource_version != created.resource_version
    assert await backend.client().get() == renewed
    # The new resourceVersion is the one to write with next.
    again = await lease.replace(renewed.resource_version, replace(renewed_spec, renew_time=2e9))
    assert again.spec.renew_time == 2e9


async def test_a_release_round_trips_with_an_empty_holder(backend: Backend) -> None:
    lease = backend.client()
    created = await lease.create(HELD)
    released = await lease.replace(created.resource_version, RELEASED)
    read = await backend.client().get()
    assert read == released
    assert read.spec.holder_identity == ""  # written and read as "", not dropped
    assert read.spec.lease_duration_seconds == 1


@pytest.mark.parametrize(
    "bad", [replace(HELD, lease_duration_seconds=-1), replace(HELD, lease_duration_seconds=0)]
)
async def test_an_invalid_spec_is_refused_as_a_value_error_not_a_conflict(
    backend: Backend, bad: LeaseSpec
) -> None:
    lease = backend.client()
    with pytest.raises(ValueError, match="leaseDurationSeconds") as refused:
        await lease.create(bad)
    assert not isinstance(refused.value, LeaseConflict)
    assert await lease.get() is None
    created = await lease.create(HELD)
    with pytest.raises(ValueError, match="leaseDurationSeconds"):
        await lease.replace(created.resource_version, bad)
    assert await lease.get() == created


async def test_wait_for_change_returns_promptly_after_another_clients_replace(
    backend: Backend,
) -> None:
    pod_a, pod_b = backend.client(), backend.client()
    created = await pod_a.create(HELD)
    waiting = asyncio.create_task(pod_a.wait_for_change(created.resource_version, 20.0))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    started = time.monotonic()
    await pod_b.replace(created.resource_version, RELEASED)
    await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_returns_after_the_timeout_when_nothing_changes(
    backend: Backend,
) -> None:
    lease = backend.client()
    created = await lease.create(HELD)
    started = time.monotonic()
    await lease.wait_for_change(created.resource_version, 0.8)
    assert 0.75 <= time.monotonic() - started < 1.3


async def test_wait_for_change_from_a_stale_version_returns_at_once(backend: Backend) -> None:
    lease = backend.client()
    created = await lease.create(HELD)
    await lease.replace(created.resource_version, RELEASED)
    started = time.monotonic()
    await lease.wait_for_change(created.resource_version, 10.0)
    assert time.monotonic() - started < 1.0


async def test_wait_for_change_on_an_absent_lease_returns_when_it_is_created(
    backend: Backend,
) -> None:
    pod_a, pod_b = backend.client(), backend.client()
    waiting = asyncio.create_task(pod_a.wait_for_change(None, 20.0))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    started = time.monotonic()
    await pod_b.create(HELD)
    await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - started < 1.0
    # A lease that exists differs from "absent" straight away.
    started = time.monotonic()
    await pod_a.wait_for_change(None, 10.0)
    assert time.monotonic() - started < 1.0


async def test_a_cancelled_wait_for_change_ends_quietly(backend: Backend) -> None:
    lease = backend.client()
    created = await lease.create(HELD)
    waiting = asyncio.create_task(lease.wait_for_change(created.resource_version, 20.0))
    await asyncio.sleep(0.3)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The lease is still usable right after.
    assert await lease.get() == created
