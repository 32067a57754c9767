"""Network partitions on the real node: links cut between parts that stay alive.

Each cut is an iptables DROP rule in one pod's own network namespace (the
node's pods, as ``make cluster`` deploys them, two aggregator replicas), while
``aggregator produce`` sends 1,000 events/s with 1 % bad messages.  Every
snapshot any dashboard saw is checked Jepsen-style (one publisher per epoch,
epochs only grow, no bucket above the brute force over the topic), the final
counts must equal the brute force, and the dead-letter topic must hold a letter
for every rejected message produced during the test.

* The leader cut from Hazelcast alone (it can still renew its lease): it gives
  the lease up after ``AGG_REDUCE_STALL_SECONDS`` without publishing, the
  follower leads, and the cut pod does not stand for the lease until it
  reaches Hazelcast again (docs/architecture.md, "A leader that cannot publish").
* A follower cut from Hazelcast: not ready, commits nothing, the leader goes on;
  after the heal it resumes.
* The leader cut from Kafka: its partitions move to the other pod after the
  session timeout; it goes on leading, since the reduce stage needs no broker.

The leader cut from the API server, and every pod cut from it, are in
``test_fast_failover.py``.  The figures go to docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from aggregator.core.events import Event
from infra import cluster
from infra.kafka import PODS_PORT
from tests.fixtures.kafka_hazelcast import KafkaServer
from tests.node import brute_force
from tests.node.deployment import (
    GROUP,
    Deployed,
    Seen,
    SnapshotWatch,
    aggregator_produce,
    assert_exact,
    cut_off,
    history_problems,
    stats,
)
from tests.support.comparisons import dead_letter_problems
from tests.support.readback import TopicMessage, committed_offsets, end_offsets
from tests.support.truth import Truth

pytestmark = [pytest.mark.timeout(900), pytest.mark.node, pytest.mark.kafka, pytest.mark.slow]

HAZELCAST_PORT = 5701
STALL_S = 5.0  # k8s/base: AGG_REDUCE_STALL_SECONDS
READINESS_S = 5 + 2 * 5 + 5 + 5
"""Not ready: a Hazelcast call times out (5 s), two failed probes 5 s apart, the probe
period, and slack."""
RATE, BAD = 1000, 0.01


@asynccontextmanager
async def _watched(deployed: Deployed) -> AsyncIterator[dict[str, SnapshotWatch]]:
    """A dashboard on the Service, and one on each aggregator pod's own address
    (what that pod's hub serves): {"service": ..., pod name: ...}."""
    pods = await asyncio.to_thread(deployed.aggregator_pods)
    watches = {"service": SnapshotWatch()}
    for pod in pods:
        watches[pod] = SnapshotWatch(url=await asyncio.to_thread(deployed.pod_ws_url, pod))
    for watch in watches.values():
        watch.start()
    try:
        for watch in watches.values():
            await watch.wait_for("at all", lambda seen: True, timeout_s=30)
        yield watches
    finally:
        for watch in watches.values():
            await watch.stop()


@dataclass
class _Loaded:
    watches: dict[str, SnapshotWatch]
    committed: Callable[[], Awaitable[dict[int, int]]]
    """The consumer group's committed offsets, by partition, read now."""
    started: float
    starts: dict[int, int]
    """The topic's end offsets before the load."""
    load: asyncio.Task[None]


@asynccontextmanager
async def _under_load(
    deployed: Deployed, kafka: KafkaServer, seconds: int, seed: int
) -> AsyncIterator[_Loaded]:
    """Dashboards and the group's offsets watched, and ``seconds`` of load under way
    for 8 s; at the end the load has finished and every check has passed."""
    starts = await end_offsets(kafka.bootstrap, cluster.TOPIC)
    async with (
        _watched(deployed) as watches,
        committed_offsets(kafka.bootstrap, GROUP) as committed,
    ):
        started = time.monotonic()
        load = asyncio.create_task(asyncio.to_thread(aggregator_produce, RATE, seconds, seed))
        await asyncio.sleep(8)
        try:
            yield _Loaded(watches, committed, started, starts, load)
        finally:
            await load  # bounded: the producer stops by itself
        await asyncio.sleep(3)
    await _checked(kafka, watches, started, starts)


async def _settled(deployed: Deployed) -> tuple[str, str]:
    """Two ready pods and a leader: (leader pod, the other pod)."""
    await asyncio.to_thread(deployed.wait_ready, 2)
    leader = await asyncio.to_thread(deployed.leader_pod)
    [other] = [pod for pod in await asyncio.to_thread(deployed.aggregator_pods) if pod != leader]
    return leader, other


async def _until(what: str, condition: object, timeout_s: float) -> float:
    """Poll ``condition`` (a blocking callable) until true; the monotonic time it was."""
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"not {what} within {timeout_s:.0f} s"
        await asyncio.sleep(0.5)
    return time.monotonic()


async def _dead_letters_complete(kafka: KafkaServer, starts: dict[int, int]) -> None:
    """A dead letter for every message rejected since ``starts`` (end offsets before
    the test produced), each an exact copy of its original; repeats are allowed
    (delivery is at-least-once)."""
    messages = await brute_force.read_topic(kafka.bootstrap, cluster.TOPIC)
    letters = await brute_force.read_topic(kafka.bootstrap, cluster.DLQ_TOPIC)
    fresh = [
        (message, verdict)
        for message, verdict in brute_force.classify(messages)
        if message.offset >= starts.get(message.partition, 0) and not isinstance(verdict, Event)
    ]
    assert len(fresh) >= 50, len(fresh)  # the producer's 1 % bad messages

    def origin(letter: TopicMessage) -> tuple[int, int]:
        headers = dict(letter.headers)
        return int(headers.get("source-partition", b"-1")), int(headers.get("source-offset", b"-1"))

    ours = [letter for letter in letters if origin(letter)[1] >= starts.get(origin(letter)[0], 0)]
    problems, _ = dead_letter_problems(Truth(rejected=fresh), ours, cluster.TOPIC)
    assert problems == [], problems[:10]


async def _checked(
    kafka: KafkaServer, watches: dict[str, SnapshotWatch], since: float, starts: dict[int, int]
) -> None:
    truth = brute_force.classify(await brute_force.read_topic(kafka.bootstrap, cluster.TOPIC))
    problems = history_problems(list(watches.values()), since, truth)
    assert problems == [], problems[:10]
    await assert_exact(kafka, at_least=50_000)
    await _dead_letters_complete(kafka, starts)


def _epochs(watches: dict[str, SnapshotWatch], since: float) -> set[tuple[int, str]]:
    return {(s.epoch, s.leader) for w in watches.values() for s in w.seen if s.at >= since}


def _owned_by(pod: str) -> list[int]:
    """The partitions ``pod`` reads, as the leader's snapshot lists its members."""
    members = stats()["members"]
    assert isinstance(members, list)
    [member] = [m for m in members if m["pod"] == pod]
    return list(member["partitions"])


# -- the cases ---------------------------------------------------------------------------------


async def test_a_leader_cut_from_hazelcast_gives_the_lease_up(
    deployed: Deployed, kafka: KafkaServer
) -> None:
    rule = ["OUTPUT", "-p", "tcp", "--dport", str(HAZELCAST_PORT), "-j", "DROP"]
    leader, other = await _settled(deployed)
    async with _under_load(deployed, kafka, 75, 61) as run:
        watches = run.watches
        epoch = max(s.epoch for w in watches.values() for s in w.seen)
        async with cut_off(deployed, [leader], rule) as cut:
            first: Seen = await watches[other].wait_for(
                "of a new epoch", lambda seen: seen.epoch > epoch, timeout_s=40
            )
            not_ready = await _until(
                f"{leader} not ready", lambda: not deployed.pod_ready(leader), READINESS_S
            )
            # cut on: it does not stand for the lease again while it cannot publish
            await asyncio.sleep(max(0.0, cut + 30 - time.monotonic()))
            holder = await asyncio.to_thread(deployed.lease_holder)
        healed = time.monotonic()
        ready_again = await _until(f"{leader} ready", lambda: deployed.pod_ready(leader), 90)
        await run.load
        after = _epochs(watches, first.at)
        logs = await asyncio.to_thread(deployed.logs, leader)
        last_old = max(s.at for w in watches.values() for s in w.seen if s.epoch == epoch)
        print(
            f"\nleader cut from Hazelcast: old epoch's last snapshot {last_old - cut:.2f} s after "
            f"the cut, the new leader's first {first.at - cut:.2f} s after (a dashboard gap of "
            f"{first.at - last_old:.2f} s); not ready after {not_ready - cut:.1f} s; ready again "
            f"{ready_again - healed:.1f} s after the heal"
        )
        assert holder.startswith(f"{other}_"), holder
        assert first.leader.startswith(f"{other}_"), first
        assert after == {(first.epoch, first.leader)}, after  # the cut pod never led again
        assert first.at - cut <= STALL_S + 5 + 5, first.at - cut  # a publish times out in 5 s
        assert "Giving the lease up so another pod leads: no snapshot published" in logs


async def test_a_follower_cut_from_hazelcast_commits_nothing_and_resumes(
    deployed: Deployed, kafka: KafkaServer
) -> None:
    rule = ["OUTPUT", "-p", "tcp", "--dport", str(HAZELCAST_PORT), "-j", "DROP"]
    leader, follower = await _settled(deployed)
    owned = await asyncio.to_thread(_owned_by, follower)
    assert owned, f"{follower} reads no partition"
    async with _under_load(deployed, kafka, 60, 62) as run:
        async with cut_off(deployed, [follower], rule) as cut:
            not_ready = await _until(
                f"{follower} not ready", lambda: not deployed.pod_ready(follower), READINESS_S
            )
            at_not_ready = await run.committed()
            await asyncio.sleep(max(0.0, cut + 25 - time.monotonic()))
            before_heal = await run.committed()
        healed = time.monotonic()
        ready_again = await _until(f"{follower} ready", lambda: deployed.pod_ready(follower), 90)
        await run.load
        await asyncio.sleep(3)
        after_heal = await run.committed()
        leaders = _epochs(run.watches, run.started)
        print(
            f"\nfollower cut from Hazelcast for {healed - cut:.0f} s: not ready after "
            f"{not_ready - cut:.1f} s, ready again {ready_again - healed:.1f} s after the heal; "
            f"its partitions {owned} committed {sum(at_not_ready[p] for p in owned)} -> "
            f"{sum(before_heal[p] for p in owned)} during the cut, "
            f"{sum(after_heal[p] for p in owned)} after"
        )
        assert {p: before_heal[p] for p in owned} == {p: at_not_ready[p] for p in owned}
        assert all(after_heal[p] > before_heal[p] for p in owned), (before_heal, after_heal)
        assert len(leaders) == 1, leaders  # the leader went on, in its term
        [(_, publisher)] = leaders
        assert publisher.startswith(f"{leader}_"), publisher


async def test_a_leader_cut_from_kafka_loses_its_partitions_and_keeps_leading(
    deployed: Deployed, kafka: KafkaServer
) -> None:
    rule = ["OUTPUT", "-p", "tcp", "--dport", str(PODS_PORT), "-j", "DROP"]
    leader, other = await _settled(deployed)
    owned = await asyncio.to_thread(_owned_by, leader)
    assert owned, f"{leader} reads no partition"
    async with _under_load(deployed, kafka, 70, 63) as run:
        async with cut_off(deployed, [leader], rule) as cut:
            at_cut = await run.committed()

            async def moved() -> bool:
                now = await run.committed()
                return all(now[p] > at_cut[p] for p in owned)

            while not await moved():
                assert time.monotonic() - cut < 60, "the cut pod's partitions never moved"
                await asyncio.sleep(0.5)
            moved_at = time.monotonic()
            await asyncio.sleep(max(0.0, cut + 30 - time.monotonic()))
            taken = await asyncio.to_thread(_owned_by, other)  # members heartbeat every few s
        healed = time.monotonic()
        await _until(f"{leader} ready", lambda: deployed.pod_ready(leader), 90)
        await run.load
        leaders = _epochs(run.watches, run.started)
        print(
            f"\nleader cut from Kafka: its partitions {owned} committed by {other} "
            f"{moved_at - cut:.1f} s after the cut (session timeout 10 s); cut for "
            f"{healed - cut:.0f} s, leaders seen: {sorted(leaders)}"
        )
        assert set(owned) <= set(taken), (owned, taken)
        assert len(leaders) == 1, leaders  # a broker it cannot reach does not stop the reducer
