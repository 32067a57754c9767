"""Electors on a simulated timeline: several pods, one memory Lease API server,
one manual clock.  Nothing sleeps for real; ``clock.advance`` runs what that much
time would run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import AsyncIterator, Callable

import pytest

from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.core.election import EXPIRY_SPREAD, ElectionTimings
from aggregator.ports.lease import LeaseConflict, LeaseForbidden, LeaseRecord, LeaseSpec
from aggregator.services.elector import Elector
from aggregator.services.leading import StepDown

T = ElectionTimings()  # client-go's: lease 15 s, renew deadline 10 s, retry 2 s, jitter 1.2
LEASE, DEADLINE, RETRY = T.lease_duration_s, T.renew_deadline_s, T.retry_period_s
FORBIDDEN = LeaseForbidden('leases.coordination.k8s.io "stream-aggregator" is forbidden')


class CountingClient(MemoryLeaseClient):
    """The memory client, counting 409s; ``fail_with`` makes every read raise."""

    def __init__(self, server: MemoryLeaseServer, clock: ManualClock) -> None:
        super().__init__(server, clock=clock)
        self.conflicts = 0
        self.fail_with: Exception | None = None
        self.failed = 0

    async def get(self) -> LeaseRecord | None:
        if self.fail_with is not None:
            self.failed += 1
            raise self.fail_with
        return await super().get()

    async def create(self, spec: LeaseSpec) -> LeaseRecord:
        try:
            return await super().create(spec)
        except LeaseConflict:
            self.conflicts += 1
            raise

    async def replace(self, resource_version: str, spec: LeaseSpec) -> LeaseRecord:
        try:
            return await super().replace(resource_version, spec)
        except LeaseConflict:
            self.conflicts += 1
            raise


class Node:
    """One pod: an elector, its lease client and what its callbacks saw."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.client = CountingClient(cluster.server, cluster.clock)
        self.started: list[int] = []
        self.stopped = 0
        self.cancelled = 0
        self.crash_after: float | None = None
        self.crash_with: Exception = RuntimeError("the reducer broke")
        self.eligible = True
        self.new_leaders: list[str] = []
        self.holder_when_stopped: list[str | None] = []
        self.elector = Elector(
            self.client,
            cluster.clock,
            f"{name}_{cluster.rng.randrange(16**5):05x}",
            cluster.timings,
            on_started_leading=self._lead,
            on_stopped_leading=self._stop,
            on_new_leader=self.new_leaders.append,
            rng=random.Random(cluster.rng.random()),
            logger=logging.getLogger(f"test.elector.{name}"),
            eligible=lambda: self.eligible,
        )
        self.task: asyncio.Task[None] = asyncio.create_task(self.elector.run())

    @property
    def identity(self) -> str:
        return self.elector.identity

    def leading(self) -> bool:
        return self.elector.leading_epoch() is not None

    async def _lead(self, epoch: int) -> None:
        self.started.append(epoch)
        self.cluster.terms.append((self.cluster.clock.monotonic(), self.identity, epoch))
        try:
            if self.crash_after is not None:
                await self.cluster.clock.sleep(self.crash_after)
                raise self.crash_with
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def _stop(self) -> None:
        self.stopped += 1
        record = self.cluster.server.record
        self.holder_when_stopped.append(record.spec.holder_identity if record else None)

    async def kill(self) -> None:
        """SIGKILL: cut off from the API server, loop gone, nothing released."""
        self.client.available = False
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Cluster:
    def __init__(self, timings: ElectionTimings = T, seed: int = 7) -> None:
        self.clock = ManualClock()
        self.server = MemoryLeaseServer()
        self.timings = timings
        self.rng = random.Random(seed)
        self.nodes: list[Node] = []
        self.terms: list[tuple[float, str, int]] = []
        """(monotonic time, identity, epoch) of every on_started_leading."""

    def add(self, name: str | None = None) -> Node:
        node = Node(self, name or f"pod-{len(self.nodes)}")
        self.nodes.append(node)
        return node

    def leaders(self) -> list[Node]:
        return [node for node in self.nodes if node.leading()]

    def holder(self) -> str | None:
        record = self.server.record
        return record.spec.holder_identity if record is not None else None

    def record(self) -> LeaseRecord:
        record = self.server.record
        assert record is not None
        return record

    def last_write_at(self) -> float:
        """Monotonic time of the lease's last write (its renewTime on this clock)."""
        renew_time = self.record().spec.renew_time
        assert renew_time is not None
        return renew_time - (self.clock.time() - self.clock.monotonic())

    async def until(self, condition: Callable[[], bool], within: float, dt: float = 0.05) -> float:
        """Advance in small steps until ``condition``; the time it became true."""
        end = self.clock.monotonic() + within
        while not condition():
            if self.clock.monotonic() >= end:
                raise AssertionError(f"not true within {within} s")
            await self.clock.advance(dt)
        return self.clock.monotonic()

    async def advance_to(self, at: float) -> None:
        await self.clock.advance(max(0.0, at - self.clock.monotonic()))

    async def close(self) -> None:
        self.server.resume()
        self.server.available = True
        for node in self.nodes:
            if not node.task.done():
                node.client.available = True
                await node.elector.stop()
            with contextlib.suppress(asyncio.CancelledError, LeaseForbidden):
                await node.task


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    world = Cluster()
    yield world
    await world.close()


async def with_leader(cluster: Cluster, nodes: int = 3) -> Node:
    for _ in range(nodes):
        cluster.add()
    await cluster.clock.advance(0)
    leaders = cluster.leaders()
    assert len(leaders) == 1
    return leaders[0]


# -- one leader ------------------------------------------------------------------------


async def test_first_elector_creates_the_lease_and_leads(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    record = cluster.record()
    assert record.spec.holder_identity == leader.identity
    assert record.spec.lease_transitions == 0
    assert record.spec.lease_duration_seconds == 15
    assert leader.started == [0]
    assert leader.elector.epoch == 0
    for node in cluster.nodes:
        assert node.elector.leader == leader.identity
        assert node.new_leaders == [leader.identity]
    # The leader renews every retry period, without jitter, keeping its epoch.
    before = cluster.server.writes
    await cluster.clock.advance(20 * RETRY)
    assert cluster.server.writes - before == 20
    assert cluster.record().spec.holder_identity == leader.identity
    assert cluster.record().spec.lease_transitions == 0
    assert [len(node.started) for node in cluster.nodes].count(1) == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_one_leader_at_a_time_through_random_outages(seed: int) -> None:
    """Three electors for ten simulated minutes while pods lose the API server, the
    API server goes down or hangs: never two leaders at the same instant, epochs
    never go back, and once all is well again a leader is back in bounded time."""
    cluster = Cluster(seed=seed)
    rng = random.Random(seed)
    try:
        nodes = [cluster.add() for _ in range(3)]
        repairs: list[tuple[float, Callable[[], None]]] = []
        highest = -1
        changes = 0
        previous: str | None = None
        dt = 0.25
        for _ in range(int(600 / dt)):
            now = cluster.clock.monotonic()
            for at, repair in [r for r in repairs if r[0] <= now]:
                repair()
                repairs.remove((at, repair))
            roll = rng.random()
            if roll < 0.02:
                node = rng.choice(nodes)
                node.client.available = False
                repairs.append((now + rng.uniform(1, 25), functools.partial(_reconnect, node)))
            elif roll < 0.023:
                cluster.server.available = False
                repairs.append(
                    (now + rng.uniform(1, 20), functools.partial(_server_up, cluster.server))
                )
            elif roll < 0.026:
                cluster.server.pause()
                repairs.append((now + rng.uniform(1, 20), cluster.server.resume))
            await cluster.clock.advance(dt)
            leaders = cluster.leaders()
            assert len(leaders) <= 1, f"two leaders at {cluster.clock.monotonic():.2f}"
            for leader in leaders:
                epoch = leader.elector.leading_epoch()
                assert epoch is not None
                assert epoch >= highest, "a leader with an older epoch after a newer one"
                highest = epoch
                if leader.identity != previous:
                    changes += 1
                    previous = leader.identity
        assert changes >= 3, "the outages should have moved leadership around"
        for _, repair in repairs:
            repair()
        for node in nodes:
            _reconnect(node)
        await cluster.until(lambda: len(cluster.leaders()) == 1, within=LEASE + 2 * RETRY + 3)
        for node in nodes:
            assert node.stopped == len(node.started) - (1 if node.leading() else 0)
    finally:
        await cluster.close()


def _reconnect(node: Node) -> None:
    node.client.available = True


def _server_up(server: MemoryLeaseServer) -> None:
    server.available = True


async def test_two_electors_racing_for_an_absent_lease(cluster: Cluster) -> None:
    """Both read "absent" and both create: the API server takes one, the other
    gets a 409, reads again and follows."""
    cluster.server.pause()
    first, second = cluster.add(), cluster.add()
    await cluster.clock.advance(0)
    assert cluster.server.record is None  # both are waiting on their read
    cluster.server.resume()
    await cluster.clock.advance(0)
    assert first.client.conflicts + second.client.conflicts == 1
    leaders = cluster.leaders()
    assert len(leaders) == 1
    loser = second if leaders[0] is first else first
    assert loser.client.conflicts == 1
    assert loser.elector.leader == leaders[0].identity
    assert loser.started == []
    await cluster.clock.advance(30)
    assert cluster.leaders() == leaders


# -- failover ---------------------------------------------------------------------------


async def test_takeover_after_a_kill_waits_for_expiry_on_observed_time(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(21.3)
    last_renewal = cluster.last_write_at()
    killed_at = cluster.clock.monotonic()
    await leader.kill()
    assert leader.stopped == 1  # its own loop ended: it stops leading locally too
    assert cluster.holder() == leader.identity  # ... but nothing was released

    taken_at = await cluster.until(
        lambda: cluster.holder() != leader.identity, within=LEASE + 2 * RETRY + 1
    )
    assert taken_at >= last_renewal + LEASE
    assert taken_at <= last_renewal + LEASE + EXPIRY_SPREAD * RETRY + 0.05
    assert taken_at - killed_at <= LEASE + 2 * RETRY  # the documented bound
    [new] = cluster.leaders()
    assert new.started == [1]
    assert cluster.record().spec.lease_transitions == 1


async def test_a_late_follower_counts_expiry_from_its_own_first_observation(
    cluster: Cluster,
) -> None:
    """The record's renewTime says the holder has been silent for a long time, but a
    follower that has only just seen the record still waits a whole lease."""
    leader = await with_leader(cluster, nodes=1)
    await cluster.clock.advance(3)
    await leader.kill()
    await cluster.clock.advance(60)  # the lease is long expired, by renewTime
    joined_at = cluster.clock.monotonic()
    late = cluster.add("late")
    await cluster.clock.advance(LEASE - 0.1)
    assert cluster.holder() == leader.identity
    assert not late.leading()
    taken_at = await cluster.until(late.leading, within=1)
    assert joined_at + LEASE <= taken_at <= joined_at + LEASE + EXPIRY_SPREAD * RETRY + 0.05


async def test_release_on_stop_hands_over_within_a_fraction_of_a_second(
    cluster: Cluster,
) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(7.5)
    epoch = leader.elector.epoch
    assert epoch == 0
    await leader.elector.stop()
    await leader.task
    released = cluster.record()
    assert released.spec.holder_identity == ""
    assert released.spec.lease_duration_seconds == 1
    assert released.spec.lease_transitions == epoch
    # It stopped leading (task cancelled, callback run) before it released.
    assert (leader.cancelled, leader.stopped) == (1, 1)
    assert leader.holder_when_stopped == [leader.identity]
    assert not leader.leading()

    stopped_at = cluster.clock.monotonic()
    taken_at = await cluster.until(lambda: len(cluster.leaders()) == 1, within=3, dt=0.01)
    assert taken_at - stopped_at < 0.1  # woken by the change, not by polling
    [new] = cluster.leaders()
    assert new.started == [epoch + 1]


async def test_cancelling_run_still_releases(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(4)
    leader.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader.task
    assert cluster.record().spec.holder_identity != leader.identity
    assert leader.stopped == 1
    await cluster.until(lambda: len(cluster.leaders()) == 1, within=1, dt=0.01)


async def test_epoch_increases_with_every_change_of_holder(cluster: Cluster) -> None:
    await with_leader(cluster)
    for round_ in range(12):
        [leader] = cluster.leaders()
        if round_ % 3 == 2:
            await leader.kill()
        else:
            await leader.elector.stop()
            await leader.task
        cluster.nodes.remove(leader)
        cluster.add()  # a replacement pod, with a new identity
        await cluster.until(lambda: len(cluster.leaders()) == 1, within=LEASE + 2 * RETRY)
        await cluster.clock.advance(RETRY)
    epochs = [epoch for _, _, epoch in cluster.terms]
    holders = [identity for _, identity, _ in cluster.terms]
    assert len(epochs) == 13
    assert epochs == sorted(set(epochs)), "epochs must strictly increase"
    assert len(set(holders)) == 13
    assert cluster.record().spec.lease_transitions == epochs[-1]


# -- a leader that cannot renew ----------------------------------------------------------


@pytest.mark.parametrize("outage", ["cut off", "server hangs"])
async def test_failing_renewals_demote_at_the_renew_deadline_before_any_takeover(
    cluster: Cluster, outage: str
) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(4.5)
    last_renewal = cluster.last_write_at()
    if outage == "cut off":
        leader.client.available = False
    else:
        cluster.server.pause()

    await cluster.advance_to(last_renewal + DEADLINE - 0.01)
    assert leader.elector.leading_epoch() == 0
    assert leader.stopped == 0
    await cluster.advance_to(last_renewal + DEADLINE)
    assert leader.elector.leading_epoch() is None
    assert not leader.elector.is_leader()
    assert (leader.cancelled, leader.stopped) == (1, 1)
    assert leader.holder_when_stopped == [leader.identity]  # nobody had taken over

    await cluster.advance_to(last_renewal + LEASE - 0.01)
    assert cluster.leaders() == []
    if outage == "cut off":
        assert cluster.holder() == leader.identity
        await cluster.clock.advance(EXPIRY_SPREAD * RETRY + 0.02)
        [new] = cluster.leaders()
        assert new is not leader
        assert new.started == [1]
    else:
        cluster.server.resume()
        await cluster.until(lambda: len(cluster.leaders()) == 1, within=RETRY * 2.2 + 6)
    await cluster.clock.advance(60)
    assert len(cluster.leaders()) == 1


async def test_a_leader_that_finds_the_lease_taken_stops_at_once(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(3)
    mine = cluster.record().spec
    cluster.server.overwrite(
        LeaseSpec("intruder_zz", 15, cluster.clock.time(), cluster.clock.time(), 1)
    )
    await cluster.clock.advance(RETRY)
    assert leader.client.conflicts == 1  # its fast renewal hit the new version
    assert leader.stopped == 1
    assert cluster.leaders() == []
    assert all(node.elector.leader == "intruder_zz" for node in cluster.nodes)
    assert mine.lease_transitions == 0


async def test_wall_clock_jumps_do_not_cause_a_takeover(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(5)
    cluster.clock.jump_wall(3600)
    await cluster.clock.advance(20)
    cluster.clock.jump_wall(-7200)
    await cluster.clock.advance(40)
    assert cluster.leaders() == [leader]
    assert cluster.holder() == leader.identity
    assert [node.started for node in cluster.nodes].count([]) == 2
    assert leader.started == [0]
    assert leader.stopped == 0
    assert cluster.record().spec.lease_transitions == 0


async def test_a_crashed_leading_task_gives_the_lease_up(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    first = cluster.add()
    first.crash_after = 3.0
    await cluster.clock.advance(0)
    others = [cluster.add(), cluster.add()]
    await cluster.clock.advance(3.0)
    assert first.stopped == 1
    assert not first.leading()
    taken = await cluster.until(lambda: len(cluster.leaders()) == 1, within=1, dt=0.01)
    assert taken <= 3.1
    [new] = cluster.leaders()
    assert new in others
    assert new.started == [1]
    assert "The leading task failed" in caplog.text


async def test_a_lone_elector_leads_again_after_its_task_crashes(cluster: Cluster) -> None:
    only = cluster.add()
    only.crash_after = 1.0
    await cluster.clock.advance(0)
    await cluster.clock.advance(1.0)
    assert not only.leading()
    only.crash_after = None
    await cluster.until(only.leading, within=RETRY * (1 + T.jitter_factor) + 0.1)
    assert only.started == [0, 1]


# -- standing for the lease --------------------------------------------------------------


async def test_a_pod_that_cannot_do_a_leaders_work_never_takes_the_lease(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leader = await with_leader(cluster)
    cut, able = [node for node in cluster.nodes if node is not leader]
    cut.eligible = False
    killed_at = cluster.clock.monotonic()
    await leader.kill()
    taken = await cluster.until(lambda: len(cluster.leaders()) == 1, within=LEASE + 2 * RETRY)
    assert cluster.leaders() == [able]
    assert taken >= killed_at + LEASE - RETRY  # at expiry: silence proves nothing
    assert cut.started == []
    assert cut.elector.leader == able.identity  # it still follows and reports the leader
    assert "no longer: this pod cannot do a leader's work" in caplog.text


async def test_a_leader_that_steps_down_leaves_the_lease_free_until_a_pod_can_lead(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    # The whole store is down: the leader cannot publish and gives the lease up,
    # and no pod stands for it until one can reach the store again.
    first = cluster.add()
    first.crash_after = 3.0
    first.crash_with = StepDown("no snapshot published for 5.0 s")
    await cluster.clock.advance(0)
    others = [cluster.add(), cluster.add()]
    for node in others:
        node.eligible = False
    await cluster.clock.advance(3.0)
    assert not first.leading()
    assert cluster.holder() == ""  # released, not left to expire
    first.eligible = False
    await cluster.clock.advance(3 * LEASE)
    assert cluster.leaders() == []
    back = others[0]
    back.eligible = True
    came_back = cluster.clock.monotonic()
    taken = await cluster.until(back.leading, within=RETRY * (1 + T.jitter_factor) + 0.1)
    assert taken - came_back <= RETRY * (1 + T.jitter_factor) + 0.1
    assert back.started == [1]
    assert [node for node in cluster.nodes if node.started and node is not first] == [back]
    # One line, no traceback: stepping down is an expected outcome, not a bug.
    assert "Giving the lease up so another pod leads: no snapshot published" in caplog.text
    assert "Traceback" not in caplog.text
    assert "The leading task failed;" not in caplog.text


async def test_a_pod_holding_off_after_stepping_down_still_follows_every_leader(
    cluster: Cluster,
) -> None:
    # It does not stand for a lease duration, but it keeps reading the lease: a
    # leader that comes and goes within that time is still logged and reported.
    first, second, third = cluster.add(), cluster.add(), cluster.add()
    for node in (first, second):
        node.crash_after = 3.0
        node.crash_with = StepDown("no snapshot published for 5.0 s")
    third.eligible = False
    await cluster.clock.advance(0)
    assert cluster.leaders() == [first]
    await cluster.until(second.leading, within=3.0 + RETRY, dt=0.01)
    third.eligible = True
    await cluster.until(third.leading, within=3.0 + RETRY, dt=0.01)
    assert cluster.clock.monotonic() < 3.0 + LEASE  # all within first's hold-off
    assert first.new_leaders == [first.identity, second.identity, third.identity]
    assert first.elector.leader == third.identity
    assert first.started == [0]


async def test_a_lone_leader_that_stepped_down_stands_again_after_a_lease_duration(
    cluster: Cluster,
) -> None:
    only = cluster.add()
    only.crash_after = 1.0
    only.crash_with = StepDown("no snapshot published for 5.0 s")
    await cluster.clock.advance(0)
    await cluster.clock.advance(1.0)
    assert not only.leading()
    stepped_down = cluster.clock.monotonic()
    only.crash_after = None
    await cluster.clock.advance(LEASE - 0.1)
    assert not only.leading()
    taken = await cluster.until(only.leading, within=LEASE * T.jitter_factor + RETRY + 0.2)
    assert taken - stepped_down >= LEASE
    assert only.started == [0, 1]


# -- health, errors, logs ----------------------------------------------------------------


async def test_healthy_fails_while_ours_and_unrenewed_for_lease_plus_20s(
    cluster: Cluster,
) -> None:
    leader = await with_leader(cluster, nodes=1)
    await cluster.clock.advance(1)
    last_renewal = cluster.last_write_at()
    leader.client.available = False
    await cluster.advance_to(last_renewal + LEASE + 20)
    assert not leader.leading()
    assert leader.elector.healthy()
    await cluster.clock.advance(0.5)
    assert not leader.elector.healthy()
    leader.client.available = True
    await cluster.until(leader.leading, within=RETRY * (1 + T.jitter_factor) + 0.1)
    assert leader.elector.healthy()
    assert leader.started == [0, 0]  # nobody else held it: same term resumed


async def test_forbidden_on_the_first_call_is_raised_from_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    client = CountingClient(MemoryLeaseServer(), clock)
    client.fail_with = FORBIDDEN

    async def lead(epoch: int) -> None:
        raise AssertionError("must not lead")

    elector = Elector(client, clock, "pod_abc", T, lead)
    with pytest.raises(LeaseForbidden):
        await elector.run()
    assert "Forbidden to use lease default/stream-aggregator as pod_abc" in caplog.text


async def test_forbidden_later_is_logged_and_retried(cluster: Cluster) -> None:
    leader = await with_leader(cluster, nodes=2)
    [follower] = [node for node in cluster.nodes if node is not leader]
    follower.client.fail_with = FORBIDDEN
    await cluster.clock.advance(10)
    assert follower.client.failed >= 2
    assert not follower.task.done()
    follower.client.fail_with = None
    await leader.elector.stop()
    await cluster.until(follower.leading, within=RETRY * (1 + T.jitter_factor) + 0.1)


async def test_new_leader_is_logged_and_reported(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    leader = await with_leader(cluster, nodes=2)
    [other] = [node for node in cluster.nodes if node is not leader]
    await leader.elector.stop()
    await cluster.until(other.leading, within=1, dt=0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == f"test.elector.{other.name}"]
    assert f"The cluster has a new leader: {leader.identity}" in lines
    assert f"The cluster has a new leader: {other.identity}" in lines
    assert other.new_leaders == [leader.identity, other.identity]
    assert any(line.startswith(f"Started leading as {other.identity}") for line in lines)
    leader_lines = [
        r.getMessage() for r in caplog.records if r.name == f"test.elector.{leader.name}"
    ]
    assert any(line.startswith(f"Stopped leading as {leader.identity}") for line in leader_lines)


async def test_stop_before_run_and_twice_is_harmless() -> None:
    clock = ManualClock()
    server = MemoryLeaseServer()

    async def lead(epoch: int) -> None:
        await asyncio.sleep(0)

    elector = Elector(MemoryLeaseClient(server, clock=clock), clock, "pod_abc", T, lead)
    await elector.stop()
    await elector.stop()
    await elector.run()
    assert server.record is None
    assert elector.leader is None
    assert elector.leading_epoch() is None


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="lease_duration_s"):
        ElectionTimings(lease_duration_s=10, renew_deadline_s=10)
    clock = ManualClock()

    async def lead(epoch: int) -> None:
        return None

    with pytest.raises(ValueError, match="non-empty identity"):
        Elector(MemoryLeaseClient(MemoryLeaseServer(), clock=clock), clock, "", T, lead)


# -- the memory Lease server itself -------------------------------------------------------


async def test_memory_server_behaves_like_the_api_server() -> None:
    clock = ManualClock()
    server = MemoryLeaseServer()
    client = MemoryLeaseClient(server, name="agg", namespace="prod", clock=clock)
    assert client.description == "prod/agg"
    assert await client.get() is None
    spec = LeaseSpec("a_1", 15, 1.0, 1.0, 0)
    first = await client.create(spec)
    with pytest.raises(LeaseConflict):
        await client.create(spec)
    second = await client.replace(first.resource_version, spec)
    assert int(second.resource_version) > int(first.resource_version)
    with pytest.raises(LeaseConflict):
        await client.replace(first.resource_version, spec)
    with pytest.raises(ValueError, match="leaseDurationSeconds"):
        await client.replace(second.resource_version, LeaseSpec("a_1", 0, 1.0, 1.0, 0))
    with pytest.raises(ValueError, match="leaseTransitions"):
        await client.replace(second.resource_version, LeaseSpec("a_1", 15, 1.0, 1.0, -1))
    server.delete()
    with pytest.raises(LeaseConflict):
        await client.replace(second.resource_version, spec)


async def test_memory_watch_wakes_on_change_and_times_out_on_the_clock() -> None:
    clock = ManualClock()
    server = MemoryLeaseServer()
    client = MemoryLeaseClient(server, clock=clock)
    record = await client.create(LeaseSpec("a_1", 15, 1.0, 1.0, 0))
    # Already different: returns at once.
    await asyncio.wait_for(client.wait_for_change(None, 10), timeout=1)
    # Nothing changes: returns after the timeout, on the manual clock.
    waiting = asyncio.ensure_future(client.wait_for_change(record.resource_version, 10))
    await clock.advance(9.9)
    assert not waiting.done()
    await clock.advance(0.1)
    assert waiting.done()
    # A write wakes it at once.
    waiting = asyncio.ensure_future(client.wait_for_change(record.resource_version, 10))
    await clock.advance(1)
    assert not waiting.done()
    await client.replace(record.resource_version, LeaseSpec("b_2", 15, 2.0, 2.0, 1))
    await clock.settle()
    assert waiting.done()
    # Losing the connection ends a watch with an error.
    latest = await client.get()
    assert latest is not None
    waiting = asyncio.ensure_future(client.wait_for_change(latest.resource_version, 10))
    await clock.settle()
    client.available = False
    await clock.settle()
    assert waiting.done()
    assert isinstance(waiting.exception(), ConnectionError)


# -- the fencing check and shutdown under stress -------------------------------------------


async def test_leading_epoch_applies_the_deadline_even_if_the_loop_never_ran(
    cluster: Cluster,
) -> None:
    """A frozen process (GC pause, starved CPU) wakes up past its renew deadline:
    whichever task runs first, the reducer's check already says "not leading"."""
    leader = await with_leader(cluster)
    await cluster.clock.advance(3)
    last_renewal = cluster.last_write_at()
    frozen_for = last_renewal + DEADLINE - cluster.clock.monotonic()
    cluster.clock._now += frozen_for - 0.001  # time passes, no task runs
    assert leader.elector.leading_epoch() == 0
    cluster.clock._now += 0.001
    assert leader.elector.leading_epoch() is None
    assert leader.elector.epoch == 0  # the loop has not noticed yet ...
    await cluster.clock.advance(0)
    assert leader.stopped == 1  # ... then it stops the term ...
    # ... and, as nobody else may have taken the lease yet (its resourceVersion is
    # still current), it renews it and leads again with the same epoch.
    await cluster.clock.advance(RETRY)
    assert cluster.leaders() == [leader]
    assert leader.started == [0, 0]
    assert [node.started for node in cluster.nodes].count([]) == 2


async def test_release_survives_cancellation_while_it_is_in_flight(cluster: Cluster) -> None:
    leader = await with_leader(cluster)
    await cluster.clock.advance(3)
    cluster.server.pause()
    stopping = asyncio.create_task(leader.elector.stop())
    await cluster.clock.advance(0)
    assert leader.stopped == 1  # stopped leading before releasing
    assert cluster.holder() == leader.identity  # the release is hanging
    leader.task.cancel()
    await cluster.clock.advance(0)
    leader.task.cancel()
    await cluster.clock.advance(0)
    cluster.server.resume()
    await cluster.clock.advance(0)
    assert leader.task.done()
    assert stopping.done()
    assert cluster.holder() != leader.identity  # released (and taken over at once)
    await cluster.clock.advance(0.1)
    [new] = cluster.leaders()
    assert new.started == [1]
    assert cluster.record().spec.lease_transitions == 1


async def test_unexpected_errors_are_logged_and_retried(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a lease client raises (here: a bug), run() keeps going."""
    node = cluster.add()
    node.client.fail_with = RuntimeError("adapter bug")
    await cluster.clock.advance(20)
    assert node.client.failed >= 4
    assert not node.task.done()
    assert "adapter bug" in caplog.text
    node.client.fail_with = None
    await cluster.until(node.leading, within=RETRY * (1 + T.jitter_factor) + 0.1)
    assert node.started == [0]


async def test_a_leading_task_that_returns_keeps_the_lease() -> None:
    clock = ManualClock()
    server = MemoryLeaseServer()
    finished: list[int] = []

    async def short(epoch: int) -> None:
        finished.append(epoch)

    elector = Elector(MemoryLeaseClient(server, clock=clock), clock, "pod_abc", T, short)
    task = asyncio.create_task(elector.run())
    await clock.advance(30)
    assert finished == [0]
    assert elector.is_leader()
    assert server.record is not None
    assert server.record.spec.lease_transitions == 0
    await elector.stop()
    await task
    assert server.record.spec.holder_identity == ""
