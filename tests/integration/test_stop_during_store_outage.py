"""SIGTERM while a partition is being assigned and Hazelcast is down (issue 18,
defect 3).

On Kafka, loading an assigned partition's partials runs inside the rebalance
callback, and a cancelled fetch waits for that callback.  While the store was
unreachable the load retried for ever without looking at stopping, so a pod
told to stop waited for kubelet's SIGKILL.  Here ``aggregator run`` runs on the
real broker and a Hazelcast member of its own (the shared members stay up for
everyone else; the Lease is left out: its API server is unreachable, so the pod
never leads, which this case is not about); the member is killed, a second
consumer joins the group so the pod is assigned partitions again, and the pod,
stuck loading them, gets SIGTERM: it must exit 0 within the grace period of
k8s/base/deployment.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from aggregator.adapters.hazelcast.connection import connect
from aggregator.ports.store import StoreUnavailable
from harness.pods import HOST, REPO, START_TIMEOUT_S, aggregator_command, free_port
from infra import hazelcast as hz_infra
from infra.maven import require_java
from infra.process import InfraError
from tests.fixtures.kafka_hazelcast import KafkaServer
from tests.fixtures.requirements import server_missing

pytestmark = [pytest.mark.kafka, pytest.mark.hazelcast, pytest.mark.slow]


class Aggregator:
    """``aggregator run`` as a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                aggregator_command(),
                env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def grace_period_s() -> float:
    """terminationGracePeriodSeconds of the aggregator's Deployment."""
    manifest = (REPO / "k8s" / "base" / "deployment.yaml").read_text(encoding="utf-8")
    found = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", manifest)
    assert found is not None, "no terminationGracePeriodSeconds in k8s/base/deployment.yaml"
    return float(found.group(1))


@dataclass
class OwnMember:
    """One Hazelcast member in a cluster of its own, on a port of its own."""

    address: str
    cluster_name: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


def member_config(port: int, cluster_name: str) -> str:
    return f"""\
hazelcast:
  cluster-name: {cluster_name}
  network:
    port:
      port: {port}
      auto-increment: false
    interfaces:
      enabled: true
      interfaces:
        - {HOST}
    join:
      auto-detection:
        enabled: false
      multicast:
        enabled: false
      tcp-ip:
        enabled: true
        member-list:
          - {HOST}:{port}
  properties:
    hazelcast.socket.bind.any: false
    hazelcast.phone.home.enabled: false
    hazelcast.wait.seconds.before.join: 0
    hazelcast.logging.type: jdk
    hazelcast.partition.operation.thread.count: 2
    hazelcast.operation.generic.thread.count: 2
    hazelcast.io.thread.count: 1
  jet:
    enabled: false
"""


def start_member(where: Path) -> OwnMember:
    try:
        java = require_java()
    except InfraError as error:
        server_missing("Java for Hazelcast", str(error))
    if not hz_infra.JARS.installed():
        server_missing("Hazelcast", "run `make infra-install`")
    port = free_port()
    cluster_name = f"stop-outage-{secrets.token_hex(4)}"
    config = where / "hazelcast.yaml"
    config.write_text(member_config(port, cluster_name), encoding="utf-8")
    options = [o for o in hz_infra.JVM_OPTIONS if not o.startswith("-Dhazelcast.config=")]
    with (where / "hazelcast.log").open("wb") as sink:
        process = subprocess.Popen(
            [
                java, *hz_infra.JAVA_MODULE_FLAGS, *options, f"-Dhazelcast.config={config}",
                "-cp", hz_infra.JARS.classpath, hz_infra.MAIN_CLASS,
            ],
            stdout=sink, stderr=subprocess.STDOUT, cwd=where,
        )  # fmt: skip
    return OwnMember(f"{HOST}:{port}", cluster_name, process)


@pytest.fixture
async def own_member(tmp_path: Path) -> AsyncIterator[OwnMember]:
    member = start_member(tmp_path)
    log = tmp_path / "hazelcast.log"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert member.process.poll() is None, log.read_text(errors="replace")[-4000:]
            try:
                probe = await connect(
                    [member.address],
                    member.cluster_name,
                    client_name="probe",
                    connect_timeout_s=2.0,
                )
            except StoreUnavailable:
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
                await asyncio.sleep(0.5)
                continue
            await probe.shutdown()
            break
        yield member
    finally:
        member.kill()


@contextlib.contextmanager
def running_aggregator(env: dict[str, str], log: Path) -> Iterator[Aggregator]:
    aggregator = Aggregator(env, log)
    try:
        yield aggregator
    finally:
        aggregator.kill()


async def until_logged(aggregator: Aggregator, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in aggregator.output():
        assert aggregator.process.poll() is None, (
            f"aggregator exited ({aggregator.process.returncode}) before logging {text!r}:\n"
            + aggregator.output()
        )
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s:.0f} s:\n" + (
            aggregator.output()
        )
        await asyncio.sleep(0.2)


def unreachable_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose API server refuses connections (a port nobody listens on)."""
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        f"- name: none\n  cluster:\n    server: https://{HOST}:{free_port()}\n"
        "    insecure-skip-tls-verify: true\n"
        "users:\n- name: none\n  user:\n    token: none\n"
        "contexts:\n- name: none\n  context:\n    cluster: none\n    user: none\n"
        "current-context: none\n",
        encoding="utf-8",
    )
    return path


async def test_sigterm_while_loading_assigned_partitions_from_a_dead_store_exits_in_time(
    kafka: KafkaServer,
    kafka_topic: str,
    own_member: OwnMember,
    tmp_path: Path,
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AGG_", "KUBE")) and name not in {"POD_NAME", "POD_NAMESPACE"}
    }
    env |= {
        "AGG_KUBECONFIG": str(unreachable_kubeconfig(tmp_path / "kubeconfig")),
        "AGG_LEASE_NAMESPACE": "default",
        "AGG_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGG_KAFKA_TOPIC": kafka_topic,
        "AGG_KAFKA_GROUP": kafka_topic,  # a group of its own
        "AGG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "AGG_HAZELCAST_MEMBERS": own_member.address,
        "AGG_HAZELCAST_CLUSTER_NAME": own_member.cluster_name,
        "AGG_HTTP_HOST": HOST,
        "AGG_HTTP_PORT": str(free_port()),
        "AGG_POD_NAME": "stop-outage",
    }
    grace_s = grace_period_s()
    with running_aggregator(env, tmp_path / "aggregator.log") as aggregator:
        await until_logged(aggregator, "assigned partitions [0, 1, 2, 3, 4, 5]", START_TIMEOUT_S)

        # The store goes away while the topic is idle (no flush notices), then a
        # second member joins the group: the pod is assigned partitions again
        # and must load them from a store that does not answer.
        own_member.kill()
        joiner = AIOKafkaConsumer(
            kafka_topic,
            bootstrap_servers=kafka.bootstrap,
            group_id=kafka_topic,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
        )
        await joiner.start()
        polling = asyncio.create_task(_poll(joiner))
        try:
            await until_logged(aggregator, "cannot load partition", START_TIMEOUT_S)

            aggregator.process.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            while aggregator.process.poll() is None:
                assert time.monotonic() - stopping < grace_s, (
                    f"still running {grace_s:g} s after SIGTERM (kubelet would SIGKILL it):\n"
                    + aggregator.output()
                )
                await asyncio.sleep(0.1)
            stopped_s = time.monotonic() - stopping
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await joiner.stop()
        assert aggregator.process.returncode == 0, aggregator.output()
        assert "stopping: assigned partitions" in aggregator.output(), aggregator.output()
        print(f"SIGTERM to exit, loading from a dead store: {stopped_s:.1f} s")


async def _poll(consumer: AIOKafkaConsumer) -> None:
    """Take part in the group (records are not needed)."""
    while True:
        await consumer.getmany(timeout_ms=500)
