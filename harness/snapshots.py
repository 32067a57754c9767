"""What the pods' websocket clients saw, and what it must satisfy."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import websockets

from harness.pods import Cluster, PodProcess


@dataclass(frozen=True)
class Seen:
    """One snapshot, as pushed by pod ``observer`` to its websocket client."""

    observer: str
    received_at: float  # monotonic, in this process
    received_wall: float
    leader: str
    epoch: int
    generated_at: float
    count: int = -1
    """The snapshot's ``total.count`` (-1 if it has none)."""
    rejected: int = -1
    """The snapshot's ``rejected.count`` (-1 if it has none)."""


class SnapshotRecorder:
    """One websocket client per pod, reconnecting while the pod lives."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.closes: dict[str, list[int | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, pod: PodProcess) -> None:
        self._tasks.append(asyncio.create_task(self._follow(pod)))

    async def _follow(self, pod: PodProcess) -> None:
        while pod.alive():
            try:
                async with websockets.connect(pod.ws_url, open_timeout=3) as client:
                    async for raw in client:
                        self._record(pod.name, raw)
            except websockets.ConnectionClosed as closed:
                self.closes.setdefault(pod.name, []).append(
                    closed.rcvd.code if closed.rcvd else None
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                pass
            else:
                self.closes.setdefault(pod.name, []).append(None)
            await asyncio.sleep(0.2)

    def _record(self, observer: str, raw: str | bytes) -> None:
        snapshot = json.loads(raw)
        self.seen.append(
            Seen(
                observer=observer,
                received_at=time.monotonic(),
                received_wall=time.time(),
                leader=str(snapshot.get("leader")),
                epoch=int(snapshot.get("epoch", -1)),
                generated_at=float(snapshot.get("generated_at", 0.0)),
                count=int(snapshot.get("total", {}).get("count", -1)),
                rejected=int(snapshot.get("rejected", {}).get("count", -1)),
            )
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def mine(self, prefix: str) -> list[Seen]:
        """What came from this scenario's leaders (other sessions share the topic)."""
        return [seen for seen in self.seen if seen.leader.startswith(prefix)]

    async def wait_for(
        self, predicate: Callable[[Seen], bool], timeout_s: float, what: str
    ) -> Seen:
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for seen in self.seen[checked:]:
                if predicate(seen):
                    return seen
            checked = len(self.seen)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout_s:g} s")
            await asyncio.sleep(0.02)


def fencing_violations(seen: Iterable[Seen]) -> list[str]:
    """Epochs that two leaders used, and leader changes that did not raise the epoch."""
    problems = []
    owner: dict[int, str] = {}
    for item in seen:
        first = owner.setdefault(item.epoch, item.leader)
        if first != item.leader:
            problems.append(f"epoch {item.epoch} published by {first} and by {item.leader}")
    terms = sorted({(s.epoch, s.leader) for s in seen})
    ordered = sorted(seen, key=lambda s: s.generated_at)
    leaders_in_time: list[tuple[str, int]] = []
    for item in ordered:
        if not leaders_in_time or leaders_in_time[-1][0] != item.leader:
            leaders_in_time.append((item.leader, item.epoch))
    for (before, before_epoch), (after, after_epoch) in itertools.pairwise(leaders_in_time):
        if after_epoch <= before_epoch:
            problems.append(
                f"leader change {before} (epoch {before_epoch}) -> {after} "
                f"(epoch {after_epoch}) did not raise the epoch; terms {terms}"
            )
    return problems


async def start_watched(cluster: Cluster, recorder: SnapshotRecorder, count: int) -> None:
    """Start ``count`` pods, wait until each serves, and record what each pushes."""
    for pod in await cluster.start_many(count):
        recorder.watch(pod)
