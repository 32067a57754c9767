"""Event-to-dashboard latency of real ``aggregator run`` pods at the default tick.

Method.  Every second ``b`` the producer sends one batch of ``rate`` events, all
stamped with the send time (in the event's ``ts`` and as the Kafka timestamp),
so the batch is the whole of bucket ``b``.  The moment within the second varies
from batch to batch (a low-discrepancy sequence over 5-95 %), so the batches
sample every phase against the pods' flush (0.5 s) and the leader's tick (on
the second), as a steady stream would.  A websocket client on every pod writes
down when each snapshot arrived.  A batch's latency, at one client, is the time
from the start of its send to the arrival of the first snapshot whose series
shows bucket ``b`` at its final count: every one of its events is then on the
dashboard.  Every event of the batch gets that latency (an event sent later in
the same batch waited less, by at most the send time of the batch, reported).
The first ``warmup`` batches are left out (the consumer group is settling).

A snapshot covers ``[end - window, end)`` with ``end`` the current second, so
bucket ``b`` cannot show before ``b + 1``: the latency includes the rest of the
event's second, then the flush that closes the bucket, then the tick after it.
``bench.latency_path`` splits each sample into those parts.  The suite runs the
default schedule and ``BASELINE_SCHEDULE`` (the one before) one after the other.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.kafka_load import BATCH_BYTES
from bench.latency_path import CALLS_PER_SNAPSHOT, Journey, PartialWatcher, quantile
from bench.pods import PARTITIONS, running_pods
from bench.workload import EventPool
from harness.snapshots import SnapshotRecorder

GOLDEN = (math.sqrt(5) - 1) / 2
BASELINE_SCHEDULE = {"AGG_ALIGN_FLUSHES": "false", "AGG_REDUCE_TICK_DELAY_SECONDS": "0.01"}
"""The schedule before issue 17 (same tick and flush interval): flushes every
interval from the pod's start, the tick 10 ms after the second."""


@dataclass
class Batch:
    bucket: int
    sent_at: float
    acked_at: float
    events: int


@dataclass
class LatencyRun:
    pods: int
    rate: int
    batches: list[Batch]
    latencies: list[float]
    """One per (batch, client) that saw the batch complete, seconds."""
    missing: int
    """(batch, client) pairs whose batch never showed complete."""
    send_s_max: float
    journeys: list[Journey]
    """The same samples split by ``bench.latency_path`` (those it could split)."""
    hazelcast_calls_per_s: float
    """Partial writes and snapshot publishes, over the measured seconds."""

    def quantile(self, q: float) -> float:
        return quantile(self.latencies, q)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.nan

    @property
    def p99(self) -> float:
        return self.quantile(0.99)


class SeriesRecorder(SnapshotRecorder):
    """Also keeps each snapshot's per-bucket counts (only the non-zero ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.series: list[tuple[str, float, dict[int, int]]] = []
        self.generated: list[float] = []
        """``generated_at`` of each snapshot in ``series``, in the same order."""

    def _record(self, observer: str, raw: str | bytes) -> None:
        super()._record(observer, raw)
        snapshot: dict[str, Any] = json.loads(raw)
        counts = {
            int(s["start"]): int(s["count"]) for s in snapshot.get("series", ()) if s["count"]
        }
        self.series.append((observer, time.time(), counts))
        self.generated.append(float(snapshot.get("generated_at", 0.0)))


def phase(index: int) -> float:
    """Where in its second batch ``index`` is sent: spread evenly over 5-95 %."""
    return 0.05 + 0.9 * ((index * GOLDEN) % 1.0)


async def _send_batches(
    bootstrap: str, topic: str, rate: int, count: int, partitions: int
) -> list[Batch]:
    pool = EventPool(size=min(rate, 20_000), seed=5)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=BATCH_BYTES
    )
    await producer.start()
    batches = []
    try:
        first = math.floor(time.time()) + 1
        for index in range(count):
            second = first + index
            await asyncio.sleep(max(0.0, second + phase(index) - time.time()))
            sent_at = time.time()
            ts_ms = int(sent_at * 1000)
            builders = [producer.create_batch() for _ in range(partitions)]
            for n in range(rate):
                event = pool.event(index * rate + n, ts_ms)
                builder = builders[n % partitions]
                if builder.append(key=event.key, value=event.value, timestamp=ts_ms) is None:
                    raise ValueError(f"{rate} events/s do not fit in one batch per partition")
            pending = []
            for partition, builder in enumerate(builders):
                builder.close()
                pending.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*pending)
            batches.append(Batch(int(sent_at), sent_at, time.time(), rate))
    finally:
        await producer.stop()
    return batches


async def measure(
    kubeconfig: Path,
    bootstrap: str,
    members: list[str],
    cluster_name: str,
    logs: Path,
    *,
    seconds: int,
    rate: int,
    pods: int = 2,
    warmup: int = 5,
    environment: dict[str, str] | None = None,
) -> LatencyRun:
    """``environment``: more ``AGG_`` settings for the pods."""
    prefix = f"benchlat{secrets.token_hex(3)}"
    recorder = SeriesRecorder()
    watcher = PartialWatcher()
    async with running_pods(
        prefix, pods, recorder, kubeconfig=kubeconfig, bootstrap=bootstrap, members=members,
        cluster_name=cluster_name, logs=logs, reduce_tick_s=1.0, extra=environment or {},
    ) as cluster:  # fmt: skip
        await watcher.start(members, cluster_name, f"partials.{prefix}")
        try:
            await recorder.wait_for(lambda s: s.leader.startswith(prefix), 60, "a first snapshot")
            topic = cluster.config.topic
            batches = await _send_batches(bootstrap, topic, rate, warmup + seconds, PARTITIONS)
            await asyncio.sleep(4.0)  # the last batch reaches the dashboards
        finally:
            await watcher.stop()
    measured = batches[warmup:]
    observers = [p.name for p in cluster.pods]
    latencies, missing = _latencies(measured, recorder.series, observers)
    start, end = float(measured[0].bucket), float(measured[-1].bucket + 1)
    snapshots = len({g for g in recorder.generated if start <= g < end})
    calls = watcher.write_calls(start, end) + CALLS_PER_SNAPSHOT * snapshots
    return LatencyRun(
        pods=pods,
        rate=rate,
        batches=measured,
        latencies=latencies,
        missing=missing,
        send_s_max=max(b.acked_at - b.sent_at for b in measured),
        journeys=_journeys(measured, recorder, watcher.stored_at(), observers),
        hazelcast_calls_per_s=calls / (end - start),
    )


def _latencies(
    batches: list[Batch], series: list[tuple[str, float, dict[int, int]]], observers: list[str]
) -> tuple[list[float], int]:
    complete_at: dict[tuple[str, int], float] = {}
    wanted = {b.bucket: b.events for b in batches}
    for observer, arrived, counts in series:
        for bucket, events in wanted.items():
            if counts.get(bucket, 0) >= events and (observer, bucket) not in complete_at:
                complete_at[(observer, bucket)] = arrived
    latencies = []
    missing = 0
    for batch in batches:
        for observer in observers:
            complete = complete_at.get((observer, batch.bucket))
            if complete is None:
                missing += 1
            else:
                latencies.append(complete - batch.sent_at)
    return latencies, missing


def _journeys(
    batches: list[Batch],
    recorder: SeriesRecorder,
    stored_at: dict[int, float],
    observers: list[str],
) -> list[Journey]:
    first: dict[tuple[str, int], tuple[float, float]] = {}
    for (observer, arrived, counts), generated in zip(
        recorder.series, recorder.generated, strict=True
    ):
        for batch in batches:
            key = (observer, batch.bucket)
            if counts.get(batch.bucket, 0) >= batch.events and key not in first:
                first[key] = (generated, arrived)
    journeys = []
    for batch in batches:
        stored = stored_at.get(batch.bucket)
        for observer in observers:
            seen = first.get((observer, batch.bucket))
            if stored is None or seen is None:
                continue
            generated, arrived = seen
            journeys.append(
                Journey(
                    phase=batch.sent_at - batch.bucket,
                    stored=stored - batch.sent_at,
                    generated=generated - batch.sent_at,
                    arrived=arrived - batch.sent_at,
                )
            )
    return journeys
