"""The Hazelcast member image built here starts with k8s/components/hazelcast as it is.

Two members of the component's StatefulSet find each other through the API
server (the endpoints of the headless Service) and form one cluster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.node import images
from infra.paths import REPO_ROOT
from tests.fixtures.node import NodeCluster

# The first node test of a session also pays for the node's `up` (a cold image build).
pytestmark = [pytest.mark.timeout(600), pytest.mark.node, pytest.mark.slow]


def _kustomization(namespace: str, directory: Path) -> Path:
    name, tag = images.HAZELCAST.name.rsplit(":", 1)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only
        "components": [os.path.relpath(REPO_ROOT / "k8s" / "components" / "hazelcast", directory)],
        "transformers": [
            json.dumps(
                {
                    "apiVersion": "builtin",
                    "kind": "NamespaceTransformer",
                    "metadata": {"name": "namespace", "namespace": namespace},
                    "setRoleBindingSubjects": "allServiceAccounts",
                }
            )
        ],
        "images": [{"name": "hazelcast/hazelcast", "newName": name, "newTag": tag}],
        "replicas": [{"name": "hazelcast", "count": 2}],
        "patches": [
            {
                "target": {"kind": "StatefulSet", "name": "hazelcast"},
                "patch": json.dumps(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/imagePullPolicy",
                            "value": "Never",
                        },
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/resources",
                            "value": {
                                "requests": {"cpu": "100m", "memory": "512Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                        },
                    ]
                ),
            }
        ],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))
    return directory


def test_two_members_of_the_component_form_one_cluster(
    node_cluster: NodeCluster, node_namespace: str, tmp_path: Path
) -> None:
    overlay = _kustomization(node_namespace, tmp_path / "overlay")
    rendered = node_cluster.ok("kustomize", str(overlay))
    node_cluster.ok("apply", "-f", "-", stdin=rendered)
    try:
        node_cluster.ok(
            "-n",
            node_namespace,
            "rollout",
            "status",
            "statefulset/hazelcast",
            "--timeout=240s",
            timeout_s=260,
        )
    except AssertionError:
        described = node_cluster.kubectl("-n", node_namespace, "describe", "pods").stdout
        logs = node_cluster.kubectl("-n", node_namespace, "logs", "hazelcast-0", "--tail=40").stdout
        raise AssertionError(
            f"the members did not become ready:\n{described[-3000:]}\n{logs}"
        ) from None
    logs = node_cluster.ok("-n", node_namespace, "logs", "hazelcast-0")
    assert "Members {size:2" in logs, logs[-3000:]
    uid = node_cluster.ok("-n", node_namespace, "exec", "hazelcast-1", "--", "id", "-u")
    assert uid.strip() == "65534"
