"""The deployment every test module of the real node shares: one per module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from infra import cluster
from tests.fixtures.kafka_hazelcast import KafkaServer
from tests.fixtures.node import NodeCluster
from tests.node.deployment import Deployed


@pytest.fixture(scope="module")
def deployed(node_cluster: NodeCluster, kafka: KafkaServer) -> Iterator[Deployed]:
    asyncio.run(cluster._create_topics())
    seconds = cluster.apply()
    print(f"\napply to Ready: {seconds:.1f} s")
    deployment = Deployed(node_cluster, cluster.NAMESPACE, seconds)
    # two aggregator pods, so that a leader can be lost and replaced
    deployment.kubectl(
        "patch", "hpa", "stream-aggregator", "--type=merge",
        "-p", json.dumps({"spec": {"minReplicas": 2, "maxReplicas": 2}}),
    )  # fmt: skip
    deployment.wait_ready(2)
    # The overlay's producer ran (it was Ready); the tests need a stream that
    # stops, so that the brute force read back from the topic is the whole of it.
    deployment.kubectl("scale", "deployment/producer", "--replicas=0")
    node_cluster.wait_for(
        "the producer pod gone",
        lambda: (
            not deployment.kubectl(
                "get", "pods", "-l", "app.kubernetes.io/name=producer", "-o", "name"
            ).strip()
        ),
        90,
    )
    try:
        yield deployment
    finally:
        cluster.delete_namespace()
