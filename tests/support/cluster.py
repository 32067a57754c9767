"""The pytest side of the pod harness (harness/): short lease timings and the
``scenario`` fixture that gives a test its own cluster of pods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pods import Cluster, ClusterConfig, Timings
from harness.snapshots import SnapshotRecorder

if TYPE_CHECKING:
    from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer
    from tests.fixtures.kube import KubeApi

SHORT_TIMINGS = Timings(lease_s=4, renew_deadline_s=3, retry_s=1)
"""Short lease settings, so that failures and failovers fit in a test."""


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
