"""The embedded demo: N simulated pods in one process on the memory adapters, a
synthetic crash-event producer, and controls to kill, stop or restart a pod.

Each pod has its own consumer, store client and lease client, so killing one cuts
exactly what a SIGKILL would cut: it stops heart-beating in the consumer group
(its partitions move after the session timeout), stops renewing the lease (another
pod takes over after the lease expires) and never flushes what it held in memory
(the others replay it from the committed offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

import xxhash

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.members import MemoryMembers
from aggregator.adapters.memory.store import (
    MemoryFeed,
    MemoryStoreClient,
    MemoryStoreServer,
)
from aggregator.core.synthetic import CrashEventGenerator
from aggregator.services.pod import Pod, PodPorts, PodSettings

log = logging.getLogger("aggregator.demo")

SESSION_TIMEOUT_S = 6.0
LOG_RETENTION_S = 120.0
"""How long the demo's in-memory topic keeps events (Kafka's retention.ms): its
consumers are never more than a flush behind, and keeping every event would grow
the demo by about 0.5 MB/s at 2,000 events/s, without end."""
PRODUCE_EVERY_S = 0.05


@dataclass
class _Handles:
    pod: Pod
    consumer: MemoryConsumer
    store: MemoryStoreClient
    feed: MemoryFeed
    lease: MemoryLeaseClient


class DemoCluster:
    def __init__(
        self,
        settings: PodSettings,
        *,
        pods: int,
        rate: float,
        partitions: int = 6,
        bad_fraction: float = 0.01,
        topic: str = "crash-events",
        group: str = "stream-aggregator",
        lease_name: str = "stream-aggregator",
        lease_namespace: str = "demo",
        seed: int | None = None,
        session_timeout_s: float = SESSION_TIMEOUT_S,
    ) -> None:
        if pods < 1:
            raise ValueError("the demo needs at least one pod")
        if rate < 0:
            raise ValueError("the event rate cannot be negative")
        self.settings = settings
        self.rate = rate
        self.clock = SystemClock()
        fold = settings.fold
        self.log = MemoryLog(self.clock, topic, partitions, retention_s=LOG_RETENTION_S)
        self.store = MemoryStoreServer(self.clock, ttl_s=fold.retention_seconds)
        self.lease = MemoryLeaseServer()
        self.bus = MemoryBus()
        self.registry = MemoryMembers(self.clock)
        self.generator = CrashEventGenerator(
            random.Random(seed), fold.schema, bad_fraction=bad_fraction
        )
        self._group = group
        self._session_timeout_s = session_timeout_s
        self._lease_name = lease_name
        self._lease_namespace = lease_namespace
        self._names = [f"pod-{i}" for i in range(pods)]
        self._handles: dict[str, _Handles] = {}
        self._producer: asyncio.Task[None] | None = None
        self.produced = 0

    # -- Backend -----------------------------------------------------------------

    def front(self) -> Pod | None:
        for name in self._names:
            handles = self._handles.get(name)
            if handles is not None and handles.pod.live():
                return handles.pod
        return None

    def pods(self) -> list[Pod]:
        return [h.pod for h in self._handles.values() if h.pod.live()]

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        for name in self._names:
            await self._start_pod(name)
        self._producer = asyncio.create_task(self._produce(), name="demo-producer")

    async def stop_producing(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
            self._producer = None

    async def close(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        for handles in list(self._handles.values()):
            await handles.pod.stop()

    async def _start_pod(self, name: str) -> None:
        consumer = MemoryConsumer(
            self.log,
            self._group,
            f"{name}-{random.randrange(1 << 30):08x}",
            session_timeout_s=self._session_timeout_s,
        )
        store = MemoryStoreClient(self.store)
        feed = MemoryFeed(self.store)
        lease = MemoryLeaseClient(
            self.lease, name=self._lease_name, namespace=self._lease_namespace, clock=self.clock
        )
        ports = PodPorts(
            source=consumer,
            store=store,
            feed=feed,
            lease=lease,
            bus=self.bus,
            registry=self.registry,
            clock=self.clock,
        )
        pod = Pod(name, ports, self.settings, logger=logging.getLogger(f"aggregator.{name}"))
        self._handles[name] = _Handles(pod, consumer, store, feed, lease)
        await pod.start()

    # -- DemoControls -------------------------------------------------------------

    async def kill(self, name: str) -> None:
        handles = self._handles[name]
        if not handles.pod.live():
            raise ValueError(f"{name} is not running")
        log.warning("killing %s (as SIGKILL: no flush, no lease release)", name)
        handles.consumer.crash()
        handles.store.available = False
        handles.feed.available = False
        handles.lease.available = False
        await handles.pod.kill()

    async def stop(self, name: str) -> None:
        handles = self._handles[name]
        if not handles.pod.live():
            raise ValueError(f"{name} is not running")
        log.warning("stopping %s gracefully (as SIGTERM)", name)
        await handles.pod.stop()

    async def restart(self, name: str) -> None:
        handles = self._handles[name]
        if handles.pod.live():
            await self.kill(name)
        log.warning("starting %s again with a new identity", name)
        await self._start_pod(name)

    def consumer(self, name: str) -> MemoryConsumer:
        """The pod's consumer (tests use it to make commits fail)."""
        return self._handles[name].consumer

    def describe(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for name in self._names:
            handles = self._handles.get(name)
            pod = handles.pod if handles else None
            rows.append(
                {
                    "name": name,
                    "identity": pod.identity if pod else None,
                    "alive": bool(pod and pod.live()),
                    "leader": bool(pod and pod.live() and pod.elector.is_leader()),
                    "partitions": sorted(pod.map.assignment()) if pod and pod.live() else [],
                }
            )
        return rows

    # -- the producer -------------------------------------------------------------

    async def _produce(self) -> None:
        """Append ``rate`` events per second, event times a little behind now."""
        rng = random.Random()
        owed = 0.0
        last = self.clock.monotonic()
        partitions = self.log.partitions
        while True:
            await asyncio.sleep(PRODUCE_EVERY_S)
            now = self.clock.monotonic()
            owed += self.rate * (now - last)
            last = now
            wall = self.clock.time()
            for _ in range(int(owed)):
                message = self.generator.message(wall - rng.random() * 0.5)
                partition = xxhash.xxh32_intdigest(message) % partitions
                self.log.append(partition, message, wall)
                self.produced += 1
            owed -= int(owed)
