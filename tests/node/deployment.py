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
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from infra import cluster
from infra.node import layout, servers
from tests.fixtures.kafka_hazelcast import KafkaServer
from tests.fixtures.node import NodeCluster
from tests.node import brute_force

WS_URL = f"ws://{layout.NODE_IP}:{cluster.NODE_PORT}/ws/stats"
POD_PORT = 8000
"""The aggregator container's port (k8s/base/deployment.yaml)."""
RELEVANT_S = 300 + 60 + 120
"""How far back a message may still count in the window shown now."""
GROUP = "stream-aggregator"
"""The aggregator's consumer group (k8s/base: AGG_KAFKA_GROUP)."""
STATS_URL = f"{cluster.DASHBOARD}api/stats"


@dataclass(frozen=True)
class Seen:
    at: float
    epoch: int
    leader: str
    generated_at: float
    window: tuple[int, int] = (0, 0)
    """The snapshot's window [start, end), epoch seconds."""
    series: tuple[tuple[int, int], ...] = ()
    """(bucket start, count) of every bucket the snapshot shows."""


@dataclass
class SnapshotWatch:
    """A dashboard's view: every fresh snapshot (new ``generated_at``) and when it came."""

    seen: list[Seen] = field(default_factory=list)
    reconnects: int = 0
    url: str = WS_URL
    """The Service by default; a pod's own address to watch what that pod serves."""
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
                async with websockets.connect(self.url, open_timeout=3) as client:
                    async for raw in client:
                        self._record(json.loads(raw))
            await asyncio.sleep(0.1)

    def _record(self, snapshot: dict[str, Any]) -> None:
        generated = float(snapshot.get("generated_at", 0.0))
        if self.seen and generated <= self.seen[-1].generated_at:
            return  # the same snapshot again, or an older one
        leader = str(snapshot.get("leader", ""))
        window = snapshot.get("window") or {}
        self.seen.append(
            Seen(
                time.monotonic(),
                int(snapshot.get("epoch", -1)),
                leader,
                generated,
                (int(window.get("start", 0)), int(window.get("end", 0))),
                tuple((int(r["start"]), int(r["count"])) for r in snapshot.get("series", ())),
            )
        )

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

    def aggregator_pod_objects(self) -> list[dict[str, Any]]:
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
            for pod in self.aggregator_pod_objects()
            if pod["status"].get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp")
        )

    def oom_killed(self) -> list[str]:
        """The aggregator containers whose last run ended in an OOM kill (kubelet's view)."""
        return sorted(
            f"{pod['metadata']['name']} (restarts {status.get('restartCount', 0)})"
            for pod in self.aggregator_pod_objects()
            for status in pod["status"].get("containerStatuses", [])
            if status.get("lastState", {}).get("terminated", {}).get("reason") == "OOMKilled"
        )

    def lease_holder(self) -> str:
        return self.kubectl(
            "get", "lease", "stream-aggregator", "-o", "jsonpath={.spec.holderIdentity}"
        ).strip()

    def leader_pod(self) -> str:
        holder = self.lease_holder()
        pod = holder.split("_", 1)[0]
        assert pod in self.aggregator_pods(), (holder, self.aggregator_pods())
        return pod

    def container_pid(self, pod: str) -> int:
        """The host PID of the pod's aggregator process (its container's init)."""
        inspected = subprocess.run(
            [*servers.crictl(), "inspect", self.container_id(pod)],
            capture_output=True,
            text=True,
            check=True,
        )
        info = json.loads(inspected.stdout)
        pid = int(info["info"].get("pid") or 0)
        if info["status"]["state"] != "CONTAINER_RUNNING" or pid <= 1:
            # an exited container reports pid 0, and kill(0) would hit this test's group
            raise LookupError(f"{pod}'s container is not running ({info['status']['state']})")
        return pid

    def network_namespace(self, pod: str) -> str:
        """The path of the pod's network namespace on the host: its ready sandbox,
        found by the pod's UID (``--name`` is a pattern, and the runtime may still
        list sandboxes of earlier runs)."""
        uid = self.kubectl("get", "pod", pod, "-o", "jsonpath={.metadata.uid}").strip()
        [sandbox] = subprocess.run(
            [
                *servers.crictl(), "pods", "--label", f"io.kubernetes.pod.uid={uid}",
                "--state", "ready", "-q",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()  # fmt: skip
        inspected = subprocess.run(
            [*servers.crictl(), "inspectp", sandbox], capture_output=True, text=True, check=True
        )
        spaces = json.loads(inspected.stdout)["info"]["runtimeSpec"]["linux"]["namespaces"]
        path: str = next(space["path"] for space in spaces if space["type"] == "network")
        return path

    def pod_ws_url(self, pod: str) -> str:
        """/ws/stats on the pod itself, not through the Service."""
        ip = self.kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}").strip()
        assert ip.startswith("10.244."), ip  # a pod on the node's bridge, never elsewhere
        return f"ws://{ip}:{POD_PORT}/ws/stats"

    def pod_ready(self, pod: str) -> bool:
        """kubelet's Ready condition of the pod (its readiness probe, /readyz)."""
        raw = self.kubectl(
            "get", "pod", pod, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
        )
        return raw.strip() == "True"

    def logs(self, pod: str) -> str:
        return self.kubectl("logs", pod, "-c", "aggregator")

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


def stats(within_s: float = 15.0) -> dict[str, object]:
    """GET /api/stats through the Service, retried for a while as a dashboard would.

    Right after pods come and go, a new connection from this host can be reset
    or refused: its source port may still match a conntrack entry that NATs to a
    pod that left, or to a new pod on the same address that does not listen yet
    (kube-proxy flushes such entries for UDP only).  The dashboards' own
    continuity is measured by the websocket watches, not here.
    """
    deadline = time.monotonic() + within_s
    while True:
        try:
            with urllib.request.urlopen(STATS_URL, timeout=5) as response:
                snapshot: dict[str, object] = json.load(response)
            return snapshot
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def dashboards(count: int) -> list[SnapshotWatch]:
    """``count`` websocket clients on the Service, each once it has its first snapshot."""
    watches = [SnapshotWatch() for _ in range(count)]
    for watch in watches:
        watch.start()
    for watch in watches:
        await watch.wait_for("at all", lambda seen: True, timeout_s=30)
    return watches


def aggregator_produce(rate: int, duration_s: int, seed: int) -> None:
    from infra.kafka import BOOTSTRAP

    aggregator = Path(sys.executable).with_name("aggregator")
    env = dict(os.environ, AGG_KAFKA_BOOTSTRAP_SERVERS=BOOTSTRAP, AGG_KAFKA_TOPIC=cluster.TOPIC)
    argv = [
        str(aggregator),
        "produce",
        "--rate",
        str(rate),
        "--duration",
        str(duration_s),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


async def ws_snapshot(within_s: float = 15.0) -> dict[str, object]:
    """One snapshot from /ws/stats through the Service, reconnecting as a dashboard does."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            async with websockets.connect(WS_URL, open_timeout=5) as client:
                raw = await asyncio.wait_for(client.recv(), timeout=10)
            snapshot: dict[str, object] = json.loads(raw)
            return snapshot
        except (OSError, TimeoutError, websockets.WebSocketException):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def assert_exact(
    kafka: KafkaServer, *, at_least: int, timeout_s: float = 90, context: str = ""
) -> None:
    """/api/stats and /ws/stats, through the Service, equal the brute force over the topic;
    ``context`` goes into the failure message (for instance, when a fault happened)."""
    await asyncio.sleep(2)  # the last flush (0.5 s) and tick (1 s)
    # Only messages that can be in a window shown from now on: the window (300 s), and
    # events up to 60 s ahead of their record's time (AGG_FUTURE_SECONDS), with margin.
    since_ms = int((time.time() - RELEVANT_S) * 1000)
    messages = await brute_force.read_topic(kafka.bootstrap, cluster.TOPIC, since_ms=since_ms)
    classified = brute_force.classify(messages)
    for source in ("/api/stats", "/ws/stats"):
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = (
                await asyncio.to_thread(stats) if source == "/api/stats" else await ws_snapshot()
            )
            window = snapshot["window"]
            assert isinstance(window, dict)
            expected = brute_force.expected_for(
                classified, int(window["start"]), int(window["end"])
            )
            found = brute_force.problems(snapshot, expected)
            if not found:
                break
            assert time.monotonic() < deadline, (
                f"{source} differs from brute force{context}: {found[:20]}"
            )
            await asyncio.sleep(1)
        assert expected.count >= at_least, (source, expected.count)


def in_network_namespace(netns: str, *argv: str) -> None:
    """Run ``argv`` (iptables, say) in the network namespace at path ``netns``."""
    done = subprocess.run(
        ["nsenter", f"--net={netns}", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@contextlib.asynccontextmanager
async def cut_off(deployed: Deployed, pods: list[str], rule: list[str]) -> AsyncIterator[float]:
    """Insert the iptables ``rule`` in each pod's own network namespace, for the
    body of the block (yields the monotonic time of the cut); always removed after."""
    spaces = [await asyncio.to_thread(deployed.network_namespace, pod) for pod in pods]
    inserted = []
    try:
        for netns in spaces:
            await asyncio.to_thread(in_network_namespace, netns, "iptables", "-I", *rule)
            inserted.append(netns)
        yield time.monotonic()
    finally:
        for netns in inserted:
            await asyncio.to_thread(in_network_namespace, netns, "iptables", "-D", *rule)


def history_problems(
    watches: list[SnapshotWatch], since: float, truth: brute_force.Classified
) -> list[str]:
    """Jepsen-style checks of every snapshot the watches saw since ``since``: one
    publisher per epoch, epochs that only grow at each dashboard, and no bucket of
    any snapshot above the brute force over the topic."""
    seen = [item for watch in watches for item in watch.seen if item.at >= since]
    problems = []
    owners: dict[int, set[str]] = {}
    for item in seen:
        owners.setdefault(item.epoch, set()).add(item.leader)
    problems += [f"epoch {e} published by {sorted(o)}" for e, o in owners.items() if len(o) > 1]
    for watch in watches:
        epochs = [item.epoch for item in watch.seen if item.at >= since]
        if epochs != sorted(epochs):
            problems.append(f"a dashboard saw an epoch go back: {epochs}")
    per_bucket = brute_force.valid_per_bucket(truth)
    for item in seen:
        problems += [
            f"epoch {item.epoch} bucket {b}: {c} > {per_bucket.get(b, 0)}"
            for b, c in item.series
            if c > per_bucket.get(b, 0)
        ]
    return problems
