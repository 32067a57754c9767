"""``make cluster``: the project deployed on the local node as an operator deploys it.

``python -m infra.cluster up`` starts the local Kafka broker and the node (which
builds the project's image from the Dockerfile), creates the topics, applies
``k8s/overlays/local`` (rbac/ + k8s/overlays/dev + Hazelcast + what this machine
needs: image names, the Kafka address, a NodePort, a producer), waits until
every pod is Ready, and prints where things are::

    kubeconfig: /var/lib/stream-aggregator-node/kubeconfig
    namespace: stream-aggregator-dev
    dashboard: http://10.244.0.1:30080/

``python -m infra.cluster down`` deletes the namespace and takes the node and the
broker down.  docs/deployment.md has what it needs and how long it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from infra.components import component
from infra.kafka import BOOTSTRAP
from infra.node import addons, layout, network
from infra.paths import REPO_ROOT
from infra.process import InfraError, exit_code

OVERLAY = REPO_ROOT / "k8s" / "overlays" / "local"
NAMESPACE = "stream-aggregator-dev"
TOPIC = "crash-events"
DLQ_TOPIC = "crash-events.dlq"
PARTITIONS = 6
NODE_PORT = 30080
DASHBOARD = f"http://{layout.NODE_IP}:{NODE_PORT}/"
#: what must be Ready, in the order the waits run
WORKLOADS = ("statefulset/hazelcast", "deployment/stream-aggregator", "deployment/producer")


async def _create_topics() -> None:
    from aggregator.adapters.kafka.topics import ensure_topic

    for name in (TOPIC, DLQ_TOPIC):
        await ensure_topic(BOOTSTRAP, name, partitions=PARTITIONS, timeout_s=60)


def _wait_namespace_gone(timeout_s: float = 300) -> None:
    """A namespace still being deleted (its pods' grace periods run up to 90 s) would
    take the new objects with it: wait until it is gone."""
    deadline = time.monotonic() + timeout_s
    while True:
        phase = addons.kubectl(
            "get", "namespace", NAMESPACE, "-o", "jsonpath={.status.phase}"
        ).stdout.strip()  # fmt: skip
        if phase != "Terminating":
            return
        if time.monotonic() > deadline:
            raise InfraError(f"namespace {NAMESPACE} is still terminating after {timeout_s:.0f} s")
        time.sleep(1)


def delete_namespace() -> None:
    """Delete the namespace and wait until it is gone."""
    addons.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    _wait_namespace_gone()


def apply() -> float:
    """Apply the local overlay and wait for every workload; return seconds from apply to Ready."""
    _wait_namespace_gone()
    started = time.monotonic()
    addons.kubectl_checked("apply", "--server-side", "--force-conflicts", "-k", str(OVERLAY))
    for workload in WORKLOADS:
        result = addons.kubectl(
            "-n", NAMESPACE, "rollout", "status", workload, "--timeout=300s", timeout_s=320
        )  # fmt: skip
        if result.returncode != 0:
            pods = addons.kubectl("-n", NAMESPACE, "get", "pods", "-o", "wide").stdout
            raise InfraError(f"{workload} did not become ready: {result.stderr.strip()}\n{pods}")
    return time.monotonic() - started


def up() -> None:
    started = time.monotonic()
    component("kafka").up()
    component("node").up()
    asyncio.run(_create_topics())
    seconds = apply()
    print(
        f"cluster: deployed in {time.monotonic() - started:.0f} s (apply to Ready {seconds:.0f} s)",
        file=sys.stderr,
    )
    print(f"kubeconfig: {layout.kubeconfig_path()}")
    print(f"namespace: {NAMESPACE}")
    print(f"dashboard: {DASHBOARD}")


def down() -> None:
    if layout.kubeconfig_path().exists() and network.carries_node_address():
        delete_namespace()
    component("node").down()
    component("kafka").down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    return exit_code(up if args.action == "up" else down)


if __name__ == "__main__":
    sys.exit(main())
