"""``aggregator run`` pods for a benchmark: a topic, the pods with a websocket
client each, a lease holder; and everything removed afterwards."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aggregator.adapters.kafka.topics import ensure_topic
from bench.kafka_load import delete_topics
from harness.lease import wait_for_holder
from harness.pods import Cluster, ClusterConfig
from harness.snapshots import SnapshotRecorder

NAMESPACE = "default"
PARTITIONS = 6


@contextlib.asynccontextmanager
async def running_pods(
    prefix: str,
    pods: int,
    recorder: SnapshotRecorder,
    *,
    kubeconfig: Path,
    bootstrap: str,
    members: list[str],
    cluster_name: str,
    logs: Path,
    **settings: Any,
) -> AsyncIterator[Cluster]:
    """``pods`` pods on topic ``<prefix>-events`` (``settings``: more
    ``ClusterConfig`` fields), each watched by ``recorder``, once one of them
    holds the lease.  On the way out: the pods' logs if something failed, then
    the recorder, the pods, the lease and every ``<prefix>`` topic go."""
    from infra.kube import control_plane

    topic = f"{prefix}-events"
    await ensure_topic(bootstrap, topic, partitions=PARTITIONS)
    config = ClusterConfig(
        kubeconfig=kubeconfig,
        namespace=NAMESPACE,
        kafka_bootstrap=bootstrap,
        topic=topic,
        hazelcast_members=members,
        hazelcast_cluster_name=cluster_name,
        prefix=prefix,
        **settings,
    )
    cluster = Cluster(config, logs / prefix)
    try:
        for pod in await cluster.start_many(pods):
            recorder.watch(pod)
        await wait_for_holder(
            control_plane.kubectl, NAMESPACE, config.lease_name, lambda h: h.startswith(prefix),
            timeout_s=config.timings.lease_s + 30,
        )  # fmt: skip
        yield cluster
    except BaseException:
        print(cluster.report(), file=sys.stderr)
        raise
    finally:
        await recorder.close()
        cluster.close()
        control_plane.kubectl("delete", "lease", config.lease_name, "-n", NAMESPACE,
                              "--ignore-not-found")  # fmt: skip
        await delete_topics(bootstrap, prefix)
