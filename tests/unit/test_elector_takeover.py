"""Takeover on proof of death, on a simulated timeline: electors with a witness,
one memory Lease server, memory pod statuses that the test writes as kubelet
would.  A proven-dead holder is replaced at once; silence, a vanished pod, a new
pod of the same name or unreadable statuses leave the lease to expire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator

import pytest

from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.adapters.memory.pods import MemoryPods
from aggregator.core.election import ElectionTimings
from aggregator.core.incarnation import Incarnation
from aggregator.ports.pods import ContainerReport, PodReport
from aggregator.services.elector import Elector
from aggregator.services.witness import DeathWitness

T = ElectionTimings()
LEASE, RETRY = T.lease_duration_s, T.retry_period_s


def container_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


class Member:
    """One aggregator container: its incarnation, elector and witness."""

    def __init__(self, world: World, pod: str, uid: str, restarts: int = 0) -> None:
        self.world = world
        self.incarnation = Incarnation(
            pod, f"{world.rng.randrange(16**5):05x}", uid, container_id(world.rng)
        )
        self.restarts = restarts
        self.client = MemoryLeaseClient(world.server, clock=world.clock)
        self.epochs: list[int] = []
        self.elector = Elector(
            self.client,
            world.clock,
            self.incarnation.identity,
            T,
            on_started_leading=self._lead,
            rng=random.Random(world.rng.random()),
            logger=logging.getLogger(f"test.takeover.{pod}"),
            witness=DeathWitness(world.pods, world.clock, retry_s=RETRY),
        )
        self.task = asyncio.create_task(self.elector.run())
        world.pods.report(self.report())

    def report(self, *, terminated: bool = False) -> PodReport:
        """kubelet's status of this member's pod, with this container current."""
        me = self.incarnation
        assert me.pod_uid is not None
        return PodReport(
            me.pod,
            me.pod_uid,
            (
                ContainerReport(
                    "aggregator",
                    me.container_id,
                    self.restarts,
                    terminated_id=me.container_id if terminated else None,
                ),
            ),
        )

    async def _lead(self, epoch: int) -> None:
        self.epochs.append(epoch)
        self.world.terms.append((self.world.clock.monotonic(), self.incarnation.identity, epoch))
        await asyncio.get_running_loop().create_future()

    def leading(self) -> bool:
        return self.elector.leading_epoch() is not None

    async def kill(self) -> None:
        """The process dies: no more API calls, nothing released."""
        self.client.available = False
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.server = MemoryLeaseServer()
        self.pods = MemoryPods()
        self.rng = random.Random(11)
        self.members: list[Member] = []
        self.terms: list[tuple[float, str, int]] = []

    def add(self, pod: str, uid: str | None = None, restarts: int = 0) -> Member:
        member = Member(self, pod, uid or str(uuid.UUID(int=self.rng.getrandbits(128))), restarts)
        self.members.append(member)
        return member

    def holder(self) -> str | None:
        record = self.server.record
        return record.spec.holder_identity if record is not None else None

    async def until(self, condition: object, within: float, dt: float = 0.05) -> float:
        end = self.clock.monotonic() + within
        while not condition():  # type: ignore[operator]
            if self.clock.monotonic() >= end:
                raise AssertionError(f"not true within {within} s")
            await self.clock.advance(dt)
        return self.clock.monotonic()

    async def close(self) -> None:
        for member in self.members:
            if not member.task.done():
                member.client.available = True
                await member.elector.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await member.task


@pytest.fixture
async def world() -> AsyncIterator[World]:
    created = World()
    yield created
    await created.close()


async def leader_of_three(world: World) -> Member:
    for name in ("agg-a", "agg-b", "agg-c"):
        world.add(name)
    await world.clock.advance(0.1)
    leaders = [m for m in world.members if m.leading()]
    assert len(leaders) == 1
    await world.clock.advance(RETRY * 3)  # a few renewals: the lease is fresh and followed
    return leaders[0]


def successor(world: World, old: Member) -> Member:
    leaders = [m for m in world.members if m.leading()]
    assert len(leaders) == 1, [m.incarnation.pod for m in leaders]
    assert leaders[0] is not old
    return leaders[0]


async def test_a_container_reported_terminated_is_replaced_at_once(world: World) -> None:
    old = await leader_of_three(world)
    await old.kill()
    killed_at = world.clock.monotonic()
    await world.clock.advance(0.8)  # kubelet's relist and status update
    world.pods.report(old.report(terminated=True))
    took = await world.until(lambda: any(m.leading() for m in world.members), within=LEASE)
    new = successor(world, old)
    assert took - killed_at < 1.5  # not the 15 s of an expiring lease
    assert new.epochs == [old.epochs[-1] + 1]
    assert world.holder() == new.incarnation.identity


async def test_a_restarted_container_proves_its_predecessor_dead(world: World) -> None:
    old = await leader_of_three(world)
    await old.kill()
    restarted = world.add(old.incarnation.pod, old.incarnation.pod_uid, restarts=1)
    # kubelet's report of the restart: a new container, the old one in lastState
    me = restarted.incarnation
    assert me.pod_uid is not None
    world.pods.report(
        PodReport(
            me.pod,
            me.pod_uid,
            (
                ContainerReport(
                    "aggregator",
                    me.container_id,
                    1,
                    last_terminated_id=old.incarnation.container_id,
                ),
            ),
        )
    )
    await world.until(lambda: any(m.leading() for m in world.members), within=1.0)
    successor(world, old)
    assert len({epoch for _, _, epoch in world.terms}) == len(world.terms)


async def test_a_restart_count_past_the_holders_proves_it_dead(world: World) -> None:
    old = await leader_of_three(world)
    await old.kill()
    me = old.incarnation
    assert me.pod_uid is not None
    # restarted twice before anyone looked again: lastState names the middle one
    world.pods.report(
        PodReport(
            me.pod,
            me.pod_uid,
            (ContainerReport("aggregator", "e" * 64, 2, last_terminated_id="d" * 64),),
        )
    )
    await world.until(lambda: any(m.leading() for m in world.members), within=1.0)
    successor(world, old)


async def test_silence_is_not_proof_the_lease_expires_as_before(world: World) -> None:
    old = await leader_of_three(world)
    last_write = world.clock.monotonic()
    old.client.available = False  # alive, cut off from the API server: it cannot renew
    took = await world.until(lambda: world.holder() != old.incarnation.identity, within=LEASE * 2)
    assert took - last_write >= LEASE - RETRY  # judged by expiry, nothing earlier
    assert old.elector.leading_epoch() is None  # it stepped down at its renew deadline


@pytest.mark.parametrize("case", ["deleted", "new pod of that name", "statuses unreadable"])
async def test_what_proves_nothing_leaves_the_lease_to_expire(world: World, case: str) -> None:
    old = await leader_of_three(world)
    last_write = world.clock.monotonic()
    await old.kill()
    if case == "deleted":  # kubectl delete --force: the process may still run somewhere
        world.pods.delete(old.incarnation.pod)
    elif case == "new pod of that name":  # a StatefulSet's replacement, a different UID
        other = world.rng.getrandbits(128)
        world.pods.report(
            PodReport(
                old.incarnation.pod,
                str(uuid.UUID(int=other)),
                (ContainerReport("aggregator", old.incarnation.container_id, 0, "f" * 64),),
            )
        )
    else:
        world.pods.cut()
        await world.clock.advance(0.1)
        world.pods.report(old.report(terminated=True))  # there, but nobody can read it
    took = await world.until(lambda: any(m.leading() for m in world.members), within=LEASE * 2)
    assert took - last_write >= LEASE - RETRY
    successor(world, old)


async def test_a_holder_whose_identity_names_no_container_is_never_followed(
    world: World,
) -> None:
    """Outside a cluster (or not its container's init) a holder can only expire."""
    client = MemoryLeaseClient(world.server, clock=world.clock)
    plain = Elector(
        client,
        world.clock,
        "outside_abcde",
        T,
        on_started_leading=lambda epoch: asyncio.get_running_loop().create_future(),
    )
    task = asyncio.create_task(plain.run())
    await world.clock.advance(0.1)
    assert plain.is_leader()
    world.add("agg-a")
    await world.clock.advance(RETRY * 2)
    assert world.pods.follows == 0
    await plain.stop()
    await task


async def test_two_witnesses_of_one_death_make_one_transition(world: World) -> None:
    old = await leader_of_three(world)
    transitions = world.server.record.spec.lease_transitions if world.server.record else -1
    await old.kill()
    world.pods.report(old.report(terminated=True))
    await world.until(lambda: any(m.leading() for m in world.members), within=1.0)
    await world.clock.advance(RETRY * 3)
    successor(world, old)
    record = world.server.record
    assert record is not None
    assert record.spec.lease_transitions == transitions + 1
