"""The embedded demo under a leader crash: failover within the bound, and the
final snapshot counts exactly the valid events generated (no server needed)."""

from __future__ import annotations

import asyncio
import time

import orjson

from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.core.events import EventSchema
from aggregator.ports.bus import Published
from aggregator.services.pod import PodSettings
from aggregator.services.reduce_stage import ReduceSettings
from aggregator.wiring.demo import DemoCluster

TIMINGS = ElectionTimings(lease_duration_s=3.0, renew_deadline_s=2.0, retry_period_s=0.5)
FAILOVER_BOUND_S = TIMINGS.lease_duration_s + 2 * TIMINGS.retry_period_s


def settings() -> PodSettings:
    schema = EventSchema()
    return PodSettings(
        fold=FoldSettings(schema, 1, 300, 30.0, 60.0, 65536),
        reduce=ReduceSettings(schema.dimensions, 300, 1, 0.5, 10),
        flush_interval_s=0.25,
        timings=TIMINGS,
        heartbeat_s=0.5,
    )


async def wait_for(condition: object, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if callable(condition) and condition():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for {what}")


async def test_leader_crash_fails_over_and_counts_stay_exact() -> None:
    cluster = DemoCluster(
        settings(),
        pods=3,
        rate=1500,
        partitions=6,
        bad_fraction=0.02,
        seed=11,
        session_timeout_s=2.0,
    )
    published: list[Published] = []
    await cluster.bus.subscribe(published.append)
    await cluster.start()
    try:
        await wait_for(lambda: published, 10, "a first snapshot")
        await asyncio.sleep(2)
        leader = published[-1].leader
        victim = next(p.name for p in cluster.pods() if p.identity == leader)

        # Its commits fail for a while (its partials are still stored): the pods
        # that take its partitions over replay those offsets and must skip them.
        cluster.consumer(victim).fail_commits = True
        await asyncio.sleep(1.5)
        await cluster.kill(victim)
        killed_at = time.monotonic()
        await wait_for(lambda: published[-1].leader != leader, FAILOVER_BOUND_S + 2, "a new leader")
        failover_s = time.monotonic() - killed_at
        assert failover_s <= FAILOVER_BOUND_S + 0.5, failover_s

        await asyncio.sleep(3)  # keep producing across the rebalance
        await cluster.stop_producing()
        produced_until = time.time()
        # Let the last bucket close and every pod flush; then read the snapshot.
        await wait_for(
            lambda: orjson.loads(published[-1].payload)["window"]["end"] > produced_until + 1,
            10,
            "a snapshot whose window covers every produced event",
        )
        await asyncio.sleep(1.5)
        final = orjson.loads(published[-1].payload)
        start, end = final["window"]["start"], final["window"]["end"]
        assert final["total"]["count"] == cluster.generator.valid_between(start, end)
        assert final["total"]["count"] > 10_000
        malformed = sum(cluster.generator.malformed.values())
        assert final["rejected"]["count"] == malformed
        for reason, count in cluster.generator.malformed.items():
            assert final["rejected"]["by_reason"][reason] == count

        assert sum(pod.map.stats.skipped for pod in cluster.pods()) > 0

        # One reducer at a time: epochs never go back, and an epoch has one leader.
        leaders_by_epoch: dict[int, set[str]] = {}
        for message in published:
            leaders_by_epoch.setdefault(message.epoch, set()).add(message.leader)
        assert all(len(leaders) == 1 for leaders in leaders_by_epoch.values())
        epochs = [message.epoch for message in published]
        assert epochs == sorted(epochs)
        assert len(leaders_by_epoch) >= 2
    finally:
        await cluster.close()
