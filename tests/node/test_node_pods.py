"""The local node runs the project's image as a Kubernetes user would see it.

Real pods on a real kubelet: the image is the one BuildKit built from the
project's Dockerfile; Services go through kube-proxy's iptables rules; names
through CoreDNS; ``kubectl top`` through metrics-server and the aggregation layer.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from tests.fixtures.node import NodeCluster
from tests.node import pods

# The first node test of a session also pays for the node's `up` (a cold image build).
pytestmark = [pytest.mark.timeout(600), pytest.mark.node, pytest.mark.slow]


def _deploy_web(node_cluster: NodeCluster, namespace: str) -> str:
    node_cluster.apply(pods.demo_deployment(node_cluster.image), namespace)
    node_cluster.apply(pods.service("web", 8000), namespace)
    node_cluster.ok(
        "-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout_s=140
    )
    return node_cluster.ok(
        "-n", namespace, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"
    )


def _run_to_completion(node_cluster: NodeCluster, namespace: str, name: str, script: str) -> str:
    node_cluster.apply(pods.script_pod(name, node_cluster.image, script), namespace)

    def finished() -> bool:
        phase = node_cluster.ok(
            "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}"
        )
        return phase in ("Succeeded", "Failed")

    node_cluster.wait_for(f"pod {name} finished", finished, timeout_s=120)
    logs = node_cluster.ok("-n", namespace, "logs", name)
    phase = node_cluster.ok("-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}")
    assert phase == "Succeeded", f"pod {name} failed:\n{logs}"
    return logs


def test_a_pod_of_the_project_image_runs_and_answers_logs_and_exec(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    pod = _deploy_web(node_cluster, node_namespace)

    logs = node_cluster.ok("-n", node_namespace, "logs", pod)
    assert "Uvicorn running on http://0.0.0.0:8000" in logs or "8000" in logs, logs

    probe = "import os, urllib.request; print(os.getuid(), os.getgid()); print(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status)"
    out = node_cluster.ok("-n", node_namespace, "exec", pod, "--", "python", "-c", probe)
    assert out.split() == ["10001", "10001", "200"], out

    # the root filesystem is read-only, /tmp (an emptyDir) is not
    denied = node_cluster.kubectl(
        "-n", node_namespace, "exec", pod, "--", "python", "-c", "open('/opt/x', 'w')"
    )
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr, denied.stderr
    node_cluster.ok(
        "-n", node_namespace, "exec", pod, "--", "python", "-c", "open('/tmp/x', 'w').write('ok')"
    )


def test_a_second_pod_reaches_the_first_through_its_service_ip_and_dns_name(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    _deploy_web(node_cluster, node_namespace)
    cluster_ip = node_cluster.ok(
        "-n", node_namespace, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"
    )
    assert re.fullmatch(r"10\.96\.\d+\.\d+", cluster_ip), cluster_ip

    targets = [
        f"http://{cluster_ip}:8000/api/stats",
        f"http://web.{node_namespace}.svc.cluster.local:8000/api/stats",
        "http://web:8000/api/stats",  # the pod's own namespace, through resolv.conf's search path
    ]
    script = (
        "import json, socket, urllib.request\n"
        f"name = 'web.{node_namespace}.svc.cluster.local'\n"
        "print(json.dumps({'dns': socket.gethostbyname(name)}))\n"
        f"for url in {targets!r}:\n"
        "    with urllib.request.urlopen(url, timeout=10) as response:\n"
        "        body = json.load(response)\n"
        "        print(json.dumps({'url': url, 'status': response.status, 'keys': sorted(body)}))\n"
    )
    logs = _run_to_completion(node_cluster, node_namespace, "client", script)
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert lines[0] == {"dns": cluster_ip}
    assert [line["url"] for line in lines[1:]] == targets
    # the same snapshot document through each way in
    for line in lines[1:]:
        assert line["status"] == 200, line
        assert line["keys"], line
        assert line["keys"] == lines[1]["keys"], line


def test_kubectl_top_shows_the_pods_cpu_and_memory(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    pod = _deploy_web(node_cluster, node_namespace)
    seen: list[str] = []

    def has_figures() -> bool:
        result = node_cluster.kubectl("-n", node_namespace, "top", "pod", pod, "--no-headers")
        seen.append(result.stdout.strip() or result.stderr.strip())
        return (
            result.returncode == 0
            and re.search(rf"^{pod}\s+\d+m\s+\d+Mi\s*$", result.stdout.strip()) is not None
        )

    node_cluster.wait_for(
        f"kubectl top pod with figures (last: {seen[-1:] if seen else ''})",
        has_figures,
        timeout_s=150,
    )
    nodes = node_cluster.ok("top", "node", "--no-headers")
    assert re.search(r"agg-node\s+\d+m\s+\d+%\s+\d+Mi\s+\d+%", nodes), nodes


async def test_a_pod_produces_to_the_local_broker_through_its_listener_on_the_bridge(
    node_cluster: NodeCluster, node_namespace: str, kafka_topic: str
) -> None:
    from aiokafka import AIOKafkaConsumer

    from infra.kafka import BOOTSTRAP, PODS_BOOTSTRAP

    script = (
        "import asyncio\n"
        "from aiokafka import AIOKafkaProducer\n"
        "async def main():\n"
        f"    producer = AIOKafkaProducer(bootstrap_servers={PODS_BOOTSTRAP!r})\n"
        "    await producer.start()\n"
        "    try:\n"
        f"        topic = {kafka_topic!r}\n"
        "        sent = await producer.send_and_wait(topic, b'from-a-pod', key=b'node')\n"
        "        print(sent.partition, sent.offset)\n"
        "    finally:\n"
        "        await producer.stop()\n"
        "asyncio.run(main())\n"
    )
    logs = _run_to_completion(node_cluster, node_namespace, "producer", script)
    partition, offset = (int(word) for word in logs.split()[-2:])

    consumer = AIOKafkaConsumer(
        kafka_topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (record.value, record.key, record.partition, record.offset) == (
        b"from-a-pod",
        b"node",
        partition,
        offset,
    )
