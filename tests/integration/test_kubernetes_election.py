"""Three Electors on KubernetesLease objects, one Lease on the local kube-apiserver,
short timings (lease 4 s, renew deadline 3 s, retry 1 s): exactly one leader,
kubectl shows it, a graceful stop hands over within ~3 s, a paused API server
leaves nobody leading past the renew deadline, epochs only go up."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from aggregator.adapters.kubernetes import KubernetesLease, from_environment
from aggregator.adapters.memory.clock import SystemClock
from aggregator.core.election import ElectionTimings, make_identity
from aggregator.services.elector import Elector
from tests.fixtures.kube import KubeApi

pytestmark = [pytest.mark.kube, pytest.mark.slow]

LEASE = "stream-aggregator"
TIMINGS = ElectionTimings(lease_duration_s=4.0, renew_deadline_s=3.0, retry_period_s=1.0)
HANDOVER_S = 3.0


class Pod:
    def __init__(self, lease: KubernetesLease, name: str, terms: list[tuple[str, int]]) -> None:
        self.identity = make_identity(name, secrets.token_hex(3))
        self.lease = lease
        self.terms = terms
        self.elector = Elector(lease, SystemClock(), self.identity, TIMINGS, self._lead)
        self.run: asyncio.Task[None] | None = None

    async def _lead(self, epoch: int) -> None:
        self.terms.append((self.identity, epoch))
        await asyncio.Event().wait()  # "reduce" until cancelled


def leaders(pods: list[Pod]) -> list[Pod]:
    return [pod for pod in pods if pod.elector.is_leader()]


async def one_leader(pods: list[Pod], timeout_s: float) -> Pod:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = leaders(pods)
        if len(found) == 1:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no single leader within {timeout_s} s: {leaders(pods)}")


async def holder_shown(kube_api: KubeApi, namespace: str) -> str:
    shown = await asyncio.to_thread(
        kube_api.kubectl,
        "get", "lease", LEASE, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


async def watch_for_two_leaders(pods: list[Pod], seen: list[list[str]]) -> None:
    """Sample who leads every 20 ms; note any moment with more than one."""
    while True:
        current = leaders(pods)
        if len(current) > 1:
            seen.append([pod.identity for pod in current])
        await asyncio.sleep(0.02)


@pytest.fixture
async def pods(kube_api: KubeApi, kube_namespace: str) -> AsyncIterator[list[Pod]]:
    terms: list[tuple[str, int]] = []
    made = [
        Pod(
            from_environment(
                LEASE, kube_namespace, str(kube_api.kubeconfig), TIMINGS.request_timeout_s
            ),
            f"aggregator-{index}",
            terms,
        )
        for index in range(3)
    ]
    try:
        yield made
    finally:
        await asyncio.gather(*(pod.elector.stop() for pod in made))
        await asyncio.gather(*(pod.run for pod in made if pod.run is not None))
        for pod in made:
            pod.lease.close()


async def test_one_leader_and_a_graceful_stop_hands_over_within_three_seconds(
    kube_api: KubeApi, kube_namespace: str, pods: list[Pod]
) -> None:
    started = time.monotonic()
    for pod in pods:
        pod.run = asyncio.create_task(pod.elector.run())
    two_leaders: list[list[str]] = []
    sampler = asyncio.create_task(watch_for_two_leaders(pods, two_leaders))
    try:
        leader = await one_leader(pods, 10.0)
        print(f"\nfirst leader after {time.monotonic() - started:.2f} s: {leader.identity}")
        await asyncio.sleep(3 * TIMINGS.retry_period_s)  # several renewals later...
        assert leaders(pods) == [leader]  # ...still the same, sole leader
        assert await holder_shown(kube_api, kube_namespace) == leader.identity
        assert all(pod.elector.leader == leader.identity for pod in pods)

        assert leader.elector.epoch is not None
        epochs = [leader.elector.epoch]
        remaining = list(pods)
        for _ in range(2):
            remaining.remove(leader)
            stopping = time.monotonic()
            await leader.elector.stop()
            assert not leader.elector.is_leader()
            shown = await holder_shown(kube_api, kube_namespace)
            assert shown in {"", *(pod.identity for pod in remaining)}, shown
            successor = await one_leader(remaining, 2 * HANDOVER_S)
            handover = time.monotonic() - stopping
            print(f"handover {leader.identity} -> {successor.identity}: {handover:.2f} s")
            assert handover < HANDOVER_S
            assert successor.elector.epoch is not None
            assert successor.elector.epoch > epochs[-1]
            epochs.append(successor.elector.epoch)
            leader = successor

        assert await holder_shown(kube_api, kube_namespace) == leader.identity
        assert two_leaders == []
        # Every term began with a higher epoch than the one before.
        terms = pods[0].terms
        assert [epoch for _, epoch in terms] == sorted({epoch for _, epoch in terms})
        assert len(terms) == 3
    finally:
        sampler.cancel()


async def test_a_paused_api_server_demotes_the_leader_by_the_renew_deadline(
    kube_api: KubeApi, pods: list[Pod]
) -> None:
    for pod in pods:
        pod.run = asyncio.create_task(pod.elector.run())
    two_leaders: list[list[str]] = []
    sampler = asyncio.create_task(watch_for_two_leaders(pods, two_leaders))
    try:
        leader = await one_leader(pods, 10.0)
        await asyncio.sleep(1.5 * TIMINGS.retry_period_s)
        epoch = leader.elector.epoch
        assert epoch is not None
        kube_api.pause()
        paused = time.monotonic()
        try:
            # The last renewal was sent before the pause, so its deadline is
            # earlier still: by then nobody may lead, and nobody can take over.
            await asyncio.sleep(TIMINGS.renew_deadline_s + 0.1)
            assert leaders(pods) == []
            # Well past the lease duration, still nobody: no write can land.
            while time.monotonic() - paused < TIMINGS.lease_duration_s + 2:
                assert leaders(pods) == []
                await asyncio.sleep(0.05)
        finally:
            kube_api.resume()
        resumed = time.monotonic()
        successor = await one_leader(pods, TIMINGS.lease_duration_s + 3 * TIMINGS.retry_period_s)
        print(f"\nleader again {time.monotonic() - resumed:.2f} s after resume: "
              f"{successor.identity} (was {leader.identity})")  # fmt: skip
        assert successor.elector.epoch is not None
        if successor is leader:
            assert successor.elector.epoch >= epoch  # the same holder resumes its term
        else:
            assert successor.elector.epoch > epoch
        await asyncio.sleep(2 * TIMINGS.retry_period_s)
        assert leaders(pods) == [successor]
        assert two_leaders == []
    finally:
        sampler.cancel()
