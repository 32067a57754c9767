"""The project as ``make cluster`` deploys it, seen from outside as an operator sees it.

:class:`Deployed` is ``k8s/overlays/local`` applied to the local node (the same
steps as ``python -m infra.cluster up``, without the node and broker, which the
session fixtures own); :class:`SnapshotWatch` is a dashboard: one websocket
client on ``/ws/stats`` through the Service, reconnecting as a browser does,
recording when each fresh snapshot arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

from infra import cluster
from infra.node import layout
from tests.fixtures.node import NodeCluster

WS_URL = f"ws://{layout.NODE_IP}:{cluster.NODE_PORT}/ws/stats"
STATS_URL = f"{cluster.DASHBOARD}api/stats"


@dataclass(frozen=True)
class Seen:
    at: float
    epoch: int
    leader: str
    generated_at: float


@dataclass
class SnapshotWatch:
    """A dashboard's view: every fresh snapshot (new ``generated_at``) and when it came."""

    seen: list[Seen] = field(default_factory=list)
    reconnects: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        first = True
        while True:
            if not first:
                self.reconnects += 1
            first = False
            with contextlib.suppress(OSError, TimeoutError, websockets.WebSocketException):
                async with websockets.connect(WS_URL, open_timeout=3) as client:
                    async for raw in client:
                        self._record(json.loads(raw))
            await asyncio.sleep(0.1)

    def _record(self, snapshot: dict[str, Any]) -> None:
        generated = float(snapshot.get("generated_at", 0.0))
        if self.seen and generated <= self.seen[-1].generated_at:
            return  # the same snapshot again, or an older one
        leader = str(snapshot.get("leader", ""))
        self.seen.append(Seen(time.monotonic(), int(snapshot.get("epoch", -1)), leader, generated))

    def longest_gap(self, since: float, until: float | None = None) -> float:
        """The longest time without a fresh snapshot between ``since`` and ``until``
        (now by default), the stretches before the first and after the last included."""
        end = time.monotonic() if until is None else until
        times = [since, *(seen.at for seen in self.seen if since <= seen.at <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def gaps_over(self, seconds: float, since: float) -> list[str]:
        """Each stretch longer than ``seconds`` without a fresh snapshot, as
        "from-to s (leader before -> after)" relative to ``since``, for a failure report."""
        times = [seen for seen in self.seen if seen.at >= since]
        found = []
        for a, b in itertools.pairwise(times):
            if b.at - a.at > seconds:
                found.append(
                    f"{a.at - since:.1f}-{b.at - since:.1f} s ({a.leader} e{a.epoch}"
                    f" -> {b.leader} e{b.epoch})"
                )
        if times and time.monotonic() - times[-1].at > seconds:
            found.append(f"{times[-1].at - since:.1f} s-now (last from {times[-1].leader})")
        return found

    async def wait_for(self, what: str, predicate: Any, timeout_s: float) -> Seen:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for seen in reversed(self.seen):
                if predicate(seen):
                    return seen
            await asyncio.sleep(0.1)
        last = self.seen[-1] if self.seen else None
        raise AssertionError(f"no snapshot {what} within {timeout_s:.0f} s (last: {last})")


@dataclass
class Deployed:
    node: NodeCluster
    namespace: str
    apply_to_ready_s: float

    def kubectl(self, *args: str, timeout_s: float = 120.0) -> str:
        return self.node.ok("-n", self.namespace, *args, timeout_s=timeout_s)

    def _aggregator_pod_objects(self) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kubectl(
                "get", "pods", "-l", "app.kubernetes.io/name=stream-aggregator", "-o", "json"
            )
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def aggregator_pods(self) -> list[str]:
        """The running aggregator pods that are not being deleted."""
        return sorted(
            pod["metadata"]["name"]
            for pod in self._aggregator_pod_objects()
            if pod["status"].get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp")
        )

    def oom_killed(self) -> list[str]:
        """The aggregator containers whose last run ended in an OOM kill (kubelet's view)."""
        return sorted(
            f"{pod['metadata']['name']} (restarts {status.get('restartCount', 0)})"
            for pod in self._aggregator_pod_objects()
            for status in pod["status"].get("containerStatuses", [])
            if status.get("lastState", {}).get("terminated", {}).get("reason") == "OOMKilled"
        )

    def lease_holder(self) -> str:
        return self.kubectl(
            "get", "lease", "stream-aggregator", "-o", "jsonpath={.spec.holderIdentity}"
        ).strip()

    def leader_pod(self) -> str:
        holder = self.lease_holder()
        pod = holder.rsplit("_", 1)[0]
        assert pod in self.aggregator_pods(), (holder, self.aggregator_pods())
        return pod

    def container_id(self, pod: str) -> str:
        raw = self.kubectl(
            "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}"
        )
        return raw.strip().removeprefix("containerd://")

    def wait_ready(self, replicas: int, timeout_s: float = 180) -> None:
        def ready() -> bool:
            out = self.kubectl(
                "get", "deployment", "stream-aggregator", "-o", "jsonpath={.status.readyReplicas}"
            )  # fmt: skip
            return out.strip() == str(replicas) and len(self.aggregator_pods()) == replicas

        self.node.wait_for(f"{replicas} ready aggregator pods", ready, timeout_s)
