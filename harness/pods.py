"""The pods of a scenario: ``aggregator run`` subprocesses with their own settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def aggregator_command(subcommand: str = "run") -> list[str]:
    script = Path(sys.executable).with_name("aggregator")
    if script.exists():
        return [str(script), subcommand]
    entry = "from aggregator.wiring.cli import main; raise SystemExit(main())"
    return [sys.executable, "-c", entry, subcommand]


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


def run_to_exit(env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str, str]:
    """``aggregator run`` expected to stop by itself: (status, stdout, stderr)."""
    done = subprocess.run(
        aggregator_command(), env=env, capture_output=True, text=True, cwd=REPO,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr
