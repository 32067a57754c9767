"""The soak: three aggregator pods on the real node under a fixed load, with faults.

``aggregator produce`` sends ``AGG_SOAK_RATE`` events/s (3,000 by default, 1 %
bad) for ``AGG_SOAK_MINUTES`` (3 here and in CI; ``make soak`` runs 30 and
writes docs/reliability.md's soak section and docs/soak.png).  Meanwhile the
leader's container is SIGKILLed every ``AGG_SOAK_KILL_EVERY_S`` and one
Hazelcast member is restarted once, half-way.  Every few seconds each
container's RSS, open descriptors and asyncio tasks, the Hazelcast entries and
the consumer lag are sampled (tests/node/soak.py).  The same run also checks
that only the kills change the leader: one new epoch per kill.

What must hold, whatever the length:

* the counts equal the brute force over the topic at the end, and no snapshot
  any dashboard saw counted an event twice;
* the Hazelcast entries stay within what the partials' TTL allows: 6 partitions
  x (retention + the 60 s events may run ahead + 120 s for Hazelcast's expiry,
  which is lazy) / bucket;
* the lag stays bounded (under 60 s of the load) and is caught up at the end;
* descriptors and tasks do not grow: after each series' warm-up they stay within
  a fixed band;
* in a run long enough to judge (``make soak``): the RSS of every series after
  its warm-up grows by at most ``RSS_SLOPE_LIMIT`` MiB/min.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from aggregator.adapters.hazelcast.connection import connect
from infra import cluster
from infra.paths import REPO_ROOT
from tests.fixtures.kafka_hazelcast import KafkaServer
from tests.node import brute_force
from tests.node.deployment import (
    GROUP,
    POD_PORT,
    RELEVANT_S,
    Deployed,
    SnapshotWatch,
    aggregator_produce,
    assert_exact,
    dashboards,
    history_problems,
)
from tests.node.soak import MIB, ClusterSample, PodSample, SoakRecord
from tests.support.readback import committed_offsets, end_offsets

MINUTES = float(os.environ.get("AGG_SOAK_MINUTES", "3"))
RATE = int(os.environ.get("AGG_SOAK_RATE", "3000"))
KILL_EVERY_S = float(os.environ.get("AGG_SOAK_KILL_EVERY_S", "40" if MINUTES < 10 else "300"))
"""In the first half of the run; the second half is judged."""
WRITE = os.environ.get("AGG_SOAK_WRITE") == "1"
SAMPLE_EVERY_S = 5.0
PODS = 3
WARM_UP_S = 450.0
"""From a container's start: the map stage keeps each bucket's partial for the
retention (window 300 s + grace 30 s + 60 s), so its state is full after 390 s."""
ROLE_WARM_UP_S = 120.0
"""From a change of role: a new leader loads the window at once, then builds the
shown keys' details over its first ticks."""
JUDGED_SPAN_S = 300.0
RSS_SLOPE_LIMIT = 1.0
"""MiB/min after warm-up: 1.4 GiB a day would be a leak worth a bug; the window and
retention are full, so a steady pod has no reason to grow at all."""
BAND = 12
"""Descriptors and tasks after warm-up: max - min (a connection or a request in flight)."""
PARTITIONS = 6
RETENTION_S = 300 + 30 + 60
FUTURE_S = 60  # AGG_FUTURE_SECONDS: a bucket can be written this long before its time
EXPIRY_LAG_S = 120  # Hazelcast expires entries by sampling, not on the second
HAZELCAST_MEMBERS = 2  # k8s/overlays/dev

pytestmark = [
    pytest.mark.timeout(int(MINUTES * 60 + 1200)),
    pytest.mark.node,
    pytest.mark.kafka,
    pytest.mark.slow,
]


def _metrics(pod_ip: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{pod_ip}:{POD_PORT}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for name in ("aggregator_asyncio_tasks", "aggregator_leader"):
        match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        if match:
            found[name] = float(match.group(1))
    return found


def _pod_samples(deployed: Deployed, at: float) -> list[PodSample]:
    samples = []
    for pod in deployed.aggregator_pod_objects():
        name = pod["metadata"]["name"]
        statuses = pod["status"].get("containerStatuses") or [{}]
        container = statuses[0].get("containerID", "").removeprefix("containerd://")
        ip = pod["status"].get("podIP", "")
        if (
            not container
            or not ip.startswith("10.244.")
            or "running" not in statuses[0].get("state", {})
        ):
            continue
        try:
            pid = deployed.container_pid(name)
            status = Path(f"/proc/{pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            metrics = _metrics(ip)
        except (OSError, LookupError, ValueError):
            continue  # between a kill and the restart
        rss_kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
        samples.append(
            PodSample(
                at,
                name,
                container,
                rss_kib * 1024,
                fds,
                int(metrics.get("aggregator_asyncio_tasks", -1)),
                metrics.get("aggregator_leader") == 1.0,
            )
        )
    return samples


def _hazelcast_members(deployed: Deployed) -> list[str]:
    listed = json.loads(
        deployed.kubectl("get", "pods", "-l", "app.kubernetes.io/name=hazelcast", "-o", "json")
    )
    ips = [p["status"].get("podIP", "") for p in listed["items"]]
    return [f"{ip}:5701" for ip in ips if ip.startswith("10.244.")]


def _epoch(deployed: Deployed) -> int:
    raw = deployed.kubectl(
        "get", "lease", "stream-aggregator", "-o", "jsonpath={.spec.leaseTransitions}"
    )
    return int(raw.strip() or 0)


async def _entries(client: object) -> int:
    partials = await client.get_map("partials.default")  # type: ignore[attr-defined]
    size: int = await partials.size()
    return size


async def _sampler(
    deployed: Deployed, kafka: KafkaServer, record: SoakRecord, began: float, done: asyncio.Event
) -> None:
    hazelcast = await connect(
        await asyncio.to_thread(_hazelcast_members, deployed),
        "stream-aggregator",
        client_name="soak-sampler",
    )
    try:
        async with committed_offsets(kafka.bootstrap, GROUP) as committed:
            while not done.is_set():
                at = time.monotonic() - began
                record.pods += await asyncio.to_thread(_pod_samples, deployed, at)
                with contextlib.suppress(Exception):  # a member restarting: the next sample
                    ends = await end_offsets(kafka.bootstrap, cluster.TOPIC)
                    offsets = await committed()
                    lag = sum(max(0, end - offsets.get(p, 0)) for p, end in ends.items())
                    epoch = await asyncio.to_thread(_epoch, deployed)
                    if record.cluster and epoch != record.cluster[-1].epoch:
                        holder = await asyncio.to_thread(deployed.lease_holder)
                        record.note(at, f"epoch {epoch}: {holder.split('_', 1)[0]} leads")
                    sample = ClusterSample(at, await _entries(hazelcast), lag, epoch)
                    record.cluster.append(sample)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), SAMPLE_EVERY_S)
    finally:
        await hazelcast.shutdown()


async def _faults(deployed: Deployed, record: SoakRecord, began: float, duration_s: float) -> None:
    """The faults, all in the first half, so that the second half can be judged: a
    SIGKILL of the leader's container every KILL_EVERY_S, then one Hazelcast member
    restarted at half-time.  Every kill moves partitions, and a pod that is given
    partitions fills their retention again: a warm-up (``SoakRecord.slopes``)."""
    rng = random.Random(16)
    half = duration_s / 2
    next_kill = KILL_EVERY_S
    while (now := time.monotonic() - began) < half:
        if now >= next_kill:
            next_kill += KILL_EVERY_S
            with contextlib.suppress(LookupError, AssertionError):
                leader = await asyncio.to_thread(deployed.leader_pod)
                pid = await asyncio.to_thread(deployed.container_pid, leader)
                os.kill(pid, signal.SIGKILL)
                record.note(now, f"leader {leader} killed (SIGKILL of its container)")
        await asyncio.sleep(1)
    member = f"hazelcast-{rng.randrange(HAZELCAST_MEMBERS)}"
    await asyncio.to_thread(deployed.kubectl, "delete", "pod", member, "--wait=false")
    record.note(time.monotonic() - began, f"Hazelcast member {member} deleted (restarted)")
    await asyncio.sleep(max(0.0, duration_s - (time.monotonic() - began)))


async def test_three_pods_under_load_with_faults_stay_exact_and_flat(
    deployed: Deployed, kafka: KafkaServer
) -> None:
    deployed.kubectl(
        "patch", "hpa", "stream-aggregator", "--type=merge",
        "-p", json.dumps({"spec": {"minReplicas": PODS, "maxReplicas": PODS}}),
    )  # fmt: skip
    await asyncio.to_thread(deployed.wait_ready, PODS)
    duration_s = MINUTES * 60
    record = SoakRecord(MINUTES, RATE)
    watches: list[SnapshotWatch] = await dashboards(2)
    began = time.monotonic()
    done = asyncio.Event()
    sampler = asyncio.create_task(_sampler(deployed, kafka, record, began, done))
    try:
        load = asyncio.create_task(asyncio.to_thread(aggregator_produce, RATE, int(duration_s), 64))
        await _faults(deployed, record, began, duration_s)
        await load
        await asyncio.to_thread(deployed.wait_ready, PODS, 240)
        await assert_exact(kafka, at_least=min(RATE * 250, int(RATE * duration_s * 0.8)))
        await asyncio.sleep(2 * SAMPLE_EVERY_S)  # the caught-up lag in the record
    finally:
        done.set()
        await sampler
        for watch in watches:
            await watch.stop()
    since_ms = int((time.time() - (time.monotonic() - began) - RELEVANT_S) * 1000)
    messages = await brute_force.read_topic(
        kafka.bootstrap, cluster.TOPIC, timeout_s=900, since_ms=since_ms
    )
    problems = history_problems(watches, began, brute_force.classify(messages))

    kills_at = [at for at, what in record.events if "killed" in what]
    slopes = record.slopes(WARM_UP_S, ROLE_WARM_UP_S, JUDGED_SPAN_S, kills_at)
    table = record.table(slopes, RSS_SLOPE_LIMIT)
    print(f"\n{table}")
    if WRITE:
        from bench.doc import write_block

        record.figure(REPO_ROOT / "docs" / "soak.png")
        write_block(
            "soak",
            f"`make soak` (`AGG_SOAK_MINUTES={MINUTES:g}`), {time.strftime('%Y-%m-%d')}:\n\n"
            f"{table}\n\n![soak](soak.png)",
            "## The soak",
            doc=REPO_ROOT / "docs" / "reliability.md",
        )

    assert problems == [], problems[:10]  # one publisher per epoch, never an event twice
    kills = sum("killed" in what for _, what in record.events)
    assert kills >= max(1, int(duration_s / 2 // KILL_EVERY_S) - 1), record.events
    # one new leader per kill: the Hazelcast restart made nobody step down
    epochs = record.cluster[-1].epoch - record.cluster[0].epoch
    assert epochs == kills, record.events
    assert record.cluster, "no cluster sample"
    entry_bound = PARTITIONS * (RETENTION_S + FUTURE_S + EXPIRY_LAG_S)
    assert max(c.entries for c in record.cluster) <= entry_bound, entry_bound
    assert max(c.lag for c in record.cluster) <= RATE * 60
    assert record.cluster[-1].lag < RATE, record.cluster[-1]  # caught up (a flush behind)
    for series in slopes:
        assert series.fds[1] - series.fds[0] <= BAND, series
        assert series.tasks[1] - series.tasks[0] <= BAND, series
        assert series.rss_mib_per_min <= RSS_SLOPE_LIMIT, series
    assert all(s.rss_bytes < 512 * MIB for s in record.pods)  # the limit, never reached
