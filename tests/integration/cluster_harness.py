"""Several ``aggregator run`` processes on the real Kafka, Hazelcast and API server.

Used by test_cluster_e2e.py and bench/failover.py.  Every process gets its own
pod name, loopback HTTP port and log file; a ``SnapshotRecorder`` keeps one
websocket client per pod and writes down every snapshot each pod pushed.

Each scenario runs in its own ``AGG_HAZELCAST_SCOPE`` (its prefix), so its maps
and topic are its own even when other sessions share the Hazelcast cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

if TYPE_CHECKING:
    from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer
    from tests.fixtures.kube import KubeApi

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def aggregator_command() -> list[str]:
    script = Path(sys.executable).with_name("aggregator")
    if script.exists():
        return [str(script), "run"]
    entry = "from aggregator.wiring.cli import main; raise SystemExit(main())"
    return [sys.executable, "-c", entry, "run"]


def clean_environment() -> dict[str, str]:
    """This process's environment without anything that would steer the pod."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AGG_", "KUBE")) and name not in {"POD_NAME", "POD_NAMESPACE"}
    }


@dataclass(frozen=True)
class Timings:
    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    @classmethod
    def parse(cls, text: str) -> Timings:
        lease, renew, retry = (float(part) for part in text.split(","))
        return cls(lease, renew, retry)

    def label(self) -> str:
        return f"{self.lease_s:g}/{self.renew_deadline_s:g}/{self.retry_s:g}"


SHORT_TIMINGS = Timings(lease_s=4, renew_deadline_s=3, retry_s=1)
"""Short lease settings, so that failures and failovers fit in a test."""


@dataclass
class ClusterConfig:
    """What every pod of one scenario shares."""

    kubeconfig: Path
    namespace: str | None
    kafka_bootstrap: str
    topic: str
    hazelcast_members: list[str]
    hazelcast_cluster_name: str
    timings: Timings = field(default_factory=Timings)
    reduce_tick_s: float = 0.5
    prefix: str = field(default_factory=lambda: f"e2e{secrets.token_hex(3)}")
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def lease_name(self) -> str:
        return f"{self.prefix}-lease"

    def environment(self, pod_name: str, port: int) -> dict[str, str]:
        env = clean_environment() | {
            "AGG_POD_NAME": pod_name,
            "AGG_HTTP_HOST": HOST,
            "AGG_HTTP_PORT": str(port),
            "AGG_KUBECONFIG": str(self.kubeconfig),
            "AGG_LEASE_NAME": self.lease_name,
            "AGG_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "AGG_KAFKA_TOPIC": self.topic,
            "AGG_KAFKA_GROUP": f"{self.prefix}-group",
            "AGG_KAFKA_DLQ_TOPIC": f"{self.prefix}-dlq",
            "AGG_HAZELCAST_MEMBERS": ",".join(self.hazelcast_members),
            "AGG_HAZELCAST_CLUSTER_NAME": self.hazelcast_cluster_name,
            "AGG_HAZELCAST_SCOPE": self.prefix,
            "AGG_REDUCE_TICK_SECONDS": f"{self.reduce_tick_s:g}",
            "AGG_LEASE_DURATION_SECONDS": f"{self.timings.lease_s:g}",
            "AGG_RENEW_DEADLINE_SECONDS": f"{self.timings.renew_deadline_s:g}",
            "AGG_RETRY_PERIOD_SECONDS": f"{self.timings.retry_s:g}",
        }
        if self.namespace is not None:
            env["AGG_LEASE_NAMESPACE"] = self.namespace
        return env | self.extra


class PodProcess:
    """One ``aggregator run`` subprocess; its output goes to ``log``."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.port = int(env["AGG_HTTP_PORT"])
        self.log = log
        self.identity: str | None = None
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                aggregator_command(),
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/stats"

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``grace_s``."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    async def get(self, path: str, timeout_s: float = 3.0) -> Any:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(self.url + path)
            response.raise_for_status()
            return response.json()

    async def wait_up(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Until /api/leader answers; returns (and remembers) the pod's identity."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before serving HTTP:\n"
                    + self.output()
                )
            with contextlib.suppress(httpx.HTTPError, OSError):
                answer = await self.get("/api/leader", timeout_s=1.0)
                self.identity = str(answer["identity"])
                return self.identity
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not serving after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


class Cluster:
    """The pods of one scenario; ``close()`` ends every process it started."""

    def __init__(self, config: ClusterConfig, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.pods: list[PodProcess] = []
        self._count = 0
        logs.mkdir(parents=True, exist_ok=True)

    def start(self) -> PodProcess:
        self._count += 1
        name = f"{self.config.prefix}-p{self._count}"
        pod = PodProcess(
            name, self.config.environment(name, free_port()), self.logs / f"{name}.log"
        )
        self.pods.append(pod)
        return pod

    async def start_many(self, count: int) -> list[PodProcess]:
        started = [self.start() for _ in range(count)]
        await asyncio.gather(*(pod.wait_up() for pod in started))
        return started

    def alive(self) -> list[PodProcess]:
        return [pod for pod in self.pods if pod.alive()]

    def by_identity(self, identity: str) -> PodProcess:
        for pod in self.pods:
            if pod.identity == identity:
                return pod
        raise AssertionError(f"no pod of this cluster has identity {identity!r}")

    def close(self) -> None:
        for pod in self.pods:
            if pod.alive():
                pod.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pod in self.pods:
            try:
                pod.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait(timeout=10)

    def report(self) -> str:
        parts = [f"--- {pod.name} ({pod.identity}) ---\n{pod.output()}" for pod in self.pods]
        return "\n".join(parts)


async def start_watched(cluster: Cluster, recorder: SnapshotRecorder, count: int) -> None:
    """Start ``count`` pods, wait until each serves, and record what each pushes."""
    for pod in await cluster.start_many(count):
        recorder.watch(pod)


@contextlib.contextmanager
def running_cluster(config: ClusterConfig, logs: Path) -> Iterator[Cluster]:
    cluster = Cluster(config, logs)
    try:
        yield cluster
    finally:
        cluster.close()


def cluster_scenario(timings: Timings, extra: dict[str, str] | None = None) -> Any:
    """A pytest fixture named ``scenario`` (assign it to a module attribute): a
    ``Cluster`` on the test's own topic, namespace and prefix, no pod started yet,
    and a ``SnapshotRecorder``.  At the end every pod is stopped and the pods' logs
    are printed (pytest shows them when the test failed)."""

    @pytest.fixture(name="scenario")
    async def scenario(
        kube_api: KubeApi,
        kube_namespace: str,
        kafka: KafkaServer,
        kafka_topic: str,
        hazelcast: HazelcastCluster,
        tmp_path: Path,
    ) -> AsyncIterator[tuple[Cluster, SnapshotRecorder]]:
        config = ClusterConfig(
            kubeconfig=kube_api.kubeconfig,
            namespace=kube_namespace,
            kafka_bootstrap=kafka.bootstrap,
            topic=kafka_topic,
            hazelcast_members=list(hazelcast.members),
            hazelcast_cluster_name=hazelcast.cluster_name,
            timings=timings,
            extra=dict(extra or {}),
        )
        cluster = Cluster(config, tmp_path / "logs")
        recorder = SnapshotRecorder()
        try:
            yield cluster, recorder
        finally:
            await recorder.close()
            cluster.close()
            print(cluster.report())

    return scenario


# -- what the websocket clients saw -------------------------------------------------


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


# -- the Lease as kubectl shows it --------------------------------------------------


def lease_spec(kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str,
               name: str) -> dict[str, Any] | None:  # fmt: skip
    shown = kubectl("get", "lease", name, "-n", namespace, "-o", "json")
    if shown.returncode != 0:
        if "NotFound" in shown.stderr:
            return None
        raise AssertionError(f"kubectl get lease failed: {shown.stderr.strip()}")
    spec: dict[str, Any] = json.loads(shown.stdout)["spec"]
    return spec


async def wait_for_holder(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    name: str,
    accept: Callable[[str], bool],
    timeout_s: float,
) -> str:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        last = await asyncio.to_thread(lease_spec, kubectl, namespace, name)
        holder = (last or {}).get("holderIdentity") or ""
        if holder and accept(holder):
            return str(holder)
        if time.monotonic() > deadline:
            raise AssertionError(f"lease {namespace}/{name} holder not as expected: {last}")
        await asyncio.sleep(0.2)


def run_to_exit(env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str, str]:
    """``aggregator run`` expected to stop by itself: (status, stdout, stderr)."""
    done = subprocess.run(
        aggregator_command(), env=env, capture_output=True, text=True, cwd=REPO,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


# -- failover, measured ---------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    how: str  # "SIGTERM" or "SIGKILL"
    seconds: float  # signal sent -> first snapshot of the new leader at a surviving pod
    old_leader: str
    old_epoch: int
    new_leader: str
    new_epoch: int
    exit_status: int | None


async def current_leader(cluster: Cluster, recorder: SnapshotRecorder, timeout_s: float) -> Seen:
    """A snapshot of this cluster's leader, pushed by some pod after now."""
    since = time.monotonic()
    prefix = cluster.config.prefix
    return await recorder.wait_for(
        lambda s: s.received_at > since and s.leader.startswith(prefix),
        timeout_s,
        "snapshot from this cluster's leader",
    )


async def fail_leader(
    cluster: Cluster, recorder: SnapshotRecorder, sig: signal.Signals, timeout_s: float
) -> Failover:
    """Signal the publishing leader; time until a surviving pod pushes a new leader's
    snapshot with a higher epoch."""
    latest = await current_leader(cluster, recorder, timeout_s=30)
    leader = cluster.by_identity(latest.leader)
    survivors = {pod.name for pod in cluster.alive() if pod is not leader}
    assert survivors, "no pod would survive the leader"
    sent = time.monotonic()
    leader.signal(sig)
    try:
        new = await recorder.wait_for(
            lambda s: (
                s.received_at > sent
                and s.observer in survivors
                and s.leader != latest.leader
                and s.epoch > latest.epoch
            ),
            timeout_s,
            f"new leader after {sig.name} of {leader.name}",
        )
    except AssertionError as error:
        statuses = {pod.name: pod.process.poll() for pod in cluster.pods}
        raise AssertionError(f"{error}; exit status by pod (None: running): {statuses}") from None
    status: int | None
    try:
        status = await asyncio.to_thread(leader.wait, 30.0)
    except subprocess.TimeoutExpired:
        status = None
    return Failover(
        sig.name, new.received_at - sent, latest.leader, latest.epoch, new.leader, new.epoch,
        status,
    )  # fmt: skip
