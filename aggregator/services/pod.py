"""One aggregator process: map stage, elector, reduce stage while leading, hub
and membership, over whatever adapters it is given.

``stop`` is the graceful path (SIGTERM): stop fetching, flush, commit, stop
reducing, release the lease, leave the consumer group, close websockets with
1012.  ``kill`` is the crash path used by the demo and tests: tasks vanish,
nothing is flushed or released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import string
from dataclasses import asdict, dataclass
from typing import Any

from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings, make_identity
from aggregator.core.incarnation import short_identity
from aggregator.ports.bus import SnapshotBus
from aggregator.ports.clock import Clock
from aggregator.ports.lease import LeaseClient
from aggregator.ports.members import MemberInfo, MemberRegistry
from aggregator.ports.pods import PodStatuses
from aggregator.ports.source import DeadLetters, EventSource
from aggregator.ports.store import PartialFeed, PartialStore
from aggregator.services.elector import Elector
from aggregator.services.hub import SERVICE_RESTART, SnapshotHub
from aggregator.services.map_stage import MapStage
from aggregator.services.membership import Membership
from aggregator.services.reduce_stage import ReduceSettings, ReduceStage
from aggregator.services.witness import DeathWitness

KILL_WAIT_S = 2.0
"""How long ``kill`` waits for the cancelled tasks to end."""

NOT_READY_MAP = "map stage cannot reach the source or the store"
NOT_READY_LEASE = "leader has not renewed its lease in time"
NOT_READY_STOPPING = "stopping"


@dataclass(frozen=True)
class PodPorts:
    source: EventSource
    store: PartialStore
    feed: PartialFeed
    lease: LeaseClient
    bus: SnapshotBus
    registry: MemberRegistry
    clock: Clock
    dead_letters: DeadLetters | None = None
    pods: PodStatuses | None = None
    """Pod statuses, in a cluster: the elector takes a lease whose holder is proven
    dead without waiting for it to expire.  None: expiry only, as outside a cluster."""


@dataclass(frozen=True)
class PodSettings:
    fold: FoldSettings
    reduce: ReduceSettings
    flush_interval_s: float
    timings: ElectionTimings
    align_flushes: bool = True
    heartbeat_s: float = 2.0


def new_identity(pod_name: str, rng: random.Random | None = None) -> str:
    chooser = rng or random.SystemRandom()
    suffix = "".join(chooser.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return make_identity(pod_name, suffix)


class Pod:
    def __init__(
        self,
        name: str,
        ports: PodPorts,
        settings: PodSettings,
        *,
        identity: str | None = None,
        lease_identity: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.identity = identity or new_identity(name)
        self.lease_identity = lease_identity or self.identity
        """What the Lease names while this pod leads: ``identity``, plus the pod UID
        and container ID where those can prove its death (core/incarnation.py)."""
        self.ports = ports
        self.settings = settings
        self._log = logger or logging.getLogger(f"aggregator.pod.{name}")
        self.started_at = ports.clock.time()
        self.map = MapStage(
            ports.source,
            ports.store,
            ports.clock,
            settings.fold,
            flush_interval_s=settings.flush_interval_s,
            align_flushes=settings.align_flushes,
            dead_letters=ports.dead_letters,
            logger=self._log.getChild("map"),
        )
        self.reduce = ReduceStage(
            ports.feed,
            ports.bus,
            ports.clock,
            settings.reduce,
            identity=self.identity,
            leading_epoch=self._leading_epoch,
            live_fields=self.live_fields,
            logger=self._log.getChild("reduce"),
        )
        witness = None
        if ports.pods is not None:
            witness = DeathWitness(
                ports.pods,
                ports.clock,
                retry_s=settings.timings.retry_period_s,
                logger=self._log.getChild("witness"),
            )
        self.elector = Elector(
            ports.lease,
            ports.clock,
            self.lease_identity,
            settings.timings,
            on_started_leading=self.reduce.run,
            logger=self._log.getChild("elector"),
            witness=witness,
            eligible=lambda: self.map.store_reachable,
        )
        self.hub = SnapshotHub(ports.bus, logger=self._log.getChild("hub"))
        self.membership = Membership(
            ports.registry,
            ports.clock,
            self.describe,
            interval_s=settings.heartbeat_s,
            logger=self._log.getChild("members"),
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._rate_mark = (ports.clock.monotonic(), 0)
        self.events_per_s = 0.0
        self.alive = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self.hub.start()
        self._tasks = [
            asyncio.create_task(self.map.run(), name=f"{self.name}-map"),
            asyncio.create_task(self.elector.run(), name=f"{self.name}-elector"),
            asyncio.create_task(self.membership.run(), name=f"{self.name}-members"),
        ]
        self.alive = True
        self._log.info("pod %s started as %s", self.name, self.identity)

    async def stop(self) -> None:
        """Graceful shutdown, in order; safe to call twice."""
        if not self.alive:
            return
        self.alive = False
        map_task, elector_task, members_task = self._tasks
        self.map.stopping()  # first: a fetch being cancelled may wait for a retry
        map_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await map_task
        await self.map.drain()
        await self.elector.stop()
        elector_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await elector_task
        # Leaving the group can wait for a rebalance in progress; the lease is
        # already released by then, so a follower takes over meanwhile.
        await self.map.leave()
        members_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await members_task
        await self.membership.leave(self.identity)
        await self.hub.close(SERVICE_RESTART)
        self._log.info("pod %s stopped", self.name)

    async def kill(self) -> None:
        """Vanish like SIGKILL: cancel everything, flush nothing, release nothing.

        The caller first cuts this pod off its adapters, so that no cleanup code
        (a ``finally`` that releases the lease, say) can reach them.
        """
        self.alive = False
        for task in self._tasks:
            task.cancel()
        # Bounded: a task that swallows its cancellation must not hang the kill.
        done, pending = await asyncio.wait(self._tasks, timeout=KILL_WAIT_S)
        for task in done:
            if not task.cancelled():
                task.exception()  # a crash is irrelevant to a kill: mark it seen
        for task in pending:
            self._log.warning("task %s ignored its cancellation", task.get_name())
        await self.hub.close(SERVICE_RESTART)

    async def wait(self) -> None:
        """Until a task ends by itself (it should not); re-raise its error."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    # -- state ---------------------------------------------------------------------

    def live(self) -> bool:
        return self.alive

    def ready(self) -> bool:
        return not self.not_ready_because()

    def not_ready_because(self) -> list[str]:
        """Why this pod should get no traffic now (empty: it is ready); the one
        readiness rule, behind both ``/readyz`` and the member list."""
        why = []
        if not self.map.ready:
            why.append(NOT_READY_MAP)
        if not self.elector.healthy():
            why.append(NOT_READY_LEASE)
        if not self.alive:
            why.append(NOT_READY_STOPPING)
        return why

    def _leading_epoch(self) -> int | None:
        return self.elector.leading_epoch() if self.alive else None

    async def describe(self) -> MemberInfo:
        clock = self.ports.clock
        now = clock.monotonic()
        mark_time, mark_records = self._rate_mark
        if now - mark_time >= 1.0:
            self.events_per_s = (self.map.stats.records - mark_records) / (now - mark_time)
            self._rate_mark = (now, self.map.stats.records)
        return MemberInfo(
            pod=self.name,
            identity=self.identity,
            started_at=self.started_at,
            heartbeat_at=clock.time(),
            partitions=tuple(sorted(self.map.assignment())),
            events_per_s=round(self.events_per_s, 1),
            lag=await self._lag(),
            ready=self.ready(),
        )

    async def _lag(self) -> int:
        try:
            ends = await self.ports.source.end_offsets()
        except ConnectionError:
            return -1
        positions = self.map.positions()
        return sum(max(0, end - positions.get(p, end)) for p, end in ends.items())

    async def live_fields(self) -> dict[str, Any]:
        leader = short_identity(self.elector.leader or "")
        members = [asdict(member) for member in self.membership.members]
        for member in members:
            member["leader"] = bool(leader) and member["identity"] == leader
        return {"members": members}
