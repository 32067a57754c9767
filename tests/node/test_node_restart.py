"""``infra down`` puts the host back as it found it, and ``infra up`` works again, twice.

Runs after the other node tests (file order): it takes the session's node down
and brings it back up for whoever comes next.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from infra.node import COMPONENT, host, network, servers
from tests.fixtures.node import NodeCluster, pristine_host
from tests.node import pods

# The first node test of a session also pays for the node's `up` (a cold image build).
pytestmark = [pytest.mark.timeout(600), pytest.mark.node, pytest.mark.slow]


def _differences(before: dict[str, object], after: dict[str, object]) -> str:
    lines = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            was, now = json.dumps(before.get(key)), json.dumps(after.get(key))
            lines.append(f"{key}:\n  before: {was}\n  after:  {now}")
    return "\n".join(lines)


def _a_pod_runs(node_cluster: NodeCluster) -> None:
    namespace = f"n-restart-{secrets.token_hex(3)}"
    node_cluster.ok("create", "namespace", namespace)
    node_cluster.apply(pods.demo_deployment(node_cluster.image), namespace)
    node_cluster.ok(
        "-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s", timeout_s=140
    )


def test_down_from_another_network_namespace_leaves_the_node_alone(
    node_cluster: NodeCluster,
) -> None:
    # An engineer's `ip netns exec ... python -m infra down` once stopped the host's
    # node from a private namespace and left its bridge and pod networks behind.
    space = f"agg-guard-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", space], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", space, sys.executable, "-m", "infra", "down", "node"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", space], check=True)
    assert done.returncode == 0, done.stderr
    assert "left alone" in done.stderr
    assert servers.KUBELET.pid() is not None
    assert network.bridge_exists()
    _a_pod_runs(node_cluster)


def test_down_restores_the_host_and_up_works_again_twice(node_cluster: NodeCluster) -> None:
    COMPONENT.down()
    # the host as it was before this session's first up, else as the first down left it
    before = pristine_host() or host.snapshot()
    assert _differences(before, host.snapshot()) == ""
    try:
        for _ in range(2):
            COMPONENT.up()
            _a_pod_runs(node_cluster)
            COMPONENT.down()
            after = host.snapshot()
            assert _differences(before, after) == "", "down left the host changed"
    finally:
        COMPONENT.up()
