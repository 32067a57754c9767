"""Issue 6, "Must show": several ``aggregator run`` processes against the real
kube-apiserver, Kafka and Hazelcast.

Every websocket client's snapshot is recorded for the whole test, and each test
ends by checking fencing: no epoch used by two leaders, and every leader change
raises the epoch.  The Hazelcast maps are shared by every process on the cluster
(``aggregator run`` has no name prefix), so each test empties them first and only
judges snapshots whose leader carries its own pod-name prefix.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from harness.failover import fail_leader
from harness.lease import lease_spec, wait_for_holder
from harness.pods import Cluster, clean_environment, run_to_exit
from harness.snapshots import Seen, SnapshotRecorder, fencing_violations, start_watched
from tests.fixtures.kube import KubeApi
from tests.support.cluster import SHORT_TIMINGS, cluster_scenario

pytestmark = [pytest.mark.kube, pytest.mark.kafka, pytest.mark.hazelcast, pytest.mark.slow]

SHORT = SHORT_TIMINGS
scenario = cluster_scenario(SHORT)


def assert_fenced(recorder: SnapshotRecorder, cluster: Cluster) -> list[Seen]:
    mine = recorder.mine(cluster.config.prefix)
    assert mine, "no snapshot from this test's pods at all"
    problems = fencing_violations(mine)
    assert not problems, "\n".join(problems)
    return mine


async def leaders_by_api(cluster: Cluster) -> dict[str, Any]:
    answers = await asyncio.gather(*(pod.get("/api/leader") for pod in cluster.alive()))
    return {pod.name: answer for pod, answer in zip(cluster.alive(), answers, strict=True)}


async def test_three_pods_one_leader_and_followers_push_snapshots(
    scenario: tuple[Cluster, SnapshotRecorder], kube_api: KubeApi, kube_namespace: str
) -> None:
    cluster, recorder = scenario
    config = cluster.config
    await start_watched(cluster, recorder, 3)
    identities = {pod.identity for pod in cluster.pods}
    holder = await wait_for_holder(
        kube_api.kubectl, kube_namespace, config.lease_name, identities.__contains__, 30
    )

    # every pod's /api/leader names the same holder, and only the holder leads
    deadline = time.monotonic() + 10
    while True:
        answers = await leaders_by_api(cluster)
        if all(a["leader"] == holder for a in answers.values()):
            break
        assert time.monotonic() < deadline, f"pods disagree on the leader: {answers}"
        await asyncio.sleep(0.2)
    leading = [name for name, a in answers.items() if a["this_pod_leads"]]
    assert leading == [cluster.by_identity(holder).name], answers

    shown = kube_api.kubectl("get", "lease", config.lease_name, "-n", kube_namespace)
    assert shown.returncode == 0, shown.stderr
    assert holder in shown.stdout, shown.stdout

    # a follower's websocket client gets the leader's snapshots, with its epoch
    epoch = int(lease_spec(kube_api.kubectl, kube_namespace, config.lease_name)["leaseTransitions"])  # type: ignore[index]
    followers = {pod.name for pod in cluster.pods if pod.identity != holder}
    seen = await recorder.wait_for(
        lambda s: s.observer in followers and s.leader == holder, 15, "snapshot at a follower"
    )
    assert seen.epoch == epoch
    assert all(a["epoch"] in (None, epoch) for a in answers.values())

    # /api/members lists the three pods (other sessions' pods filtered out)
    deadline = time.monotonic() + 15
    while True:
        members = await cluster.pods[0].get("/api/members")
        ours = sorted(
            str(m.get("pod")) for m in members if str(m.get("pod")).startswith(config.prefix)
        )
        if ours == sorted(pod.name for pod in cluster.pods):
            break
        assert time.monotonic() < deadline, f"/api/members: {members}"
        await asyncio.sleep(0.3)
    assert_fenced(recorder, cluster)


class LeaseWatch:
    """``kubectl get lease -w -o json`` in the background: every version of the Lease."""

    def __init__(self, kube_api: KubeApi, namespace: str, name: str, log: Path) -> None:
        self.log = log
        self._sink = log.open("wb")
        self.process = subprocess.Popen(
            [
                *kubectl_command(kube_api),
                "get", "lease", name, "-n", namespace, "-w", "-o", "json",
            ],
            stdout=self._sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> list[dict[str, Any]]:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._sink.close()
        text = self.log.read_text(errors="replace")
        decoder = json.JSONDecoder()
        specs: list[dict[str, Any]] = []
        at = 0
        while True:
            at = text.find("{", at)
            if at < 0:
                return specs
            document, at = decoder.raw_decode(text, at)
            specs.append(document.get("spec", {}))


def kubectl_command(kube_api: KubeApi) -> list[str]:
    from infra.kube import build

    return [str(build.binaries().bin_dir / "kubectl"), "--kubeconfig", str(kube_api.kubeconfig)]


async def test_failover_on_sigterm_and_sigkill(
    scenario: tuple[Cluster, SnapshotRecorder],
    kube_api: KubeApi,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    cluster, recorder = scenario
    config = cluster.config
    await start_watched(cluster, recorder, 3)
    await wait_for_holder(kube_api.kubectl, kube_namespace, config.lease_name, bool, 30)

    watch = LeaseWatch(kube_api, kube_namespace, config.lease_name, tmp_path / "lease-watch.json")
    try:
        await asyncio.sleep(1)  # the watch prints the current version first
        graceful = await fail_leader(cluster, recorder, signal.SIGTERM, timeout_s=10)
        await asyncio.sleep(0.5)
    finally:
        versions = watch.stop()
    print(f"SIGTERM failover: {graceful}")
    assert graceful.exit_status == 0, cluster.report()
    assert graceful.seconds <= 3.0, graceful
    assert graceful.new_epoch > graceful.old_epoch
    released = [
        v for v in versions
        if not v.get("holderIdentity") and v.get("leaseDurationSeconds") == 1
    ]  # fmt: skip
    assert released, f"kubectl never showed the lease released: {versions}"
    assert released[0].get("leaseTransitions") == graceful.old_epoch, released[0]

    bound = SHORT.lease_s + 2 * SHORT.retry_s
    crashed = await fail_leader(cluster, recorder, signal.SIGKILL, timeout_s=bound + 10)
    print(f"SIGKILL failover: {crashed}")
    assert crashed.seconds <= bound, crashed
    assert crashed.exit_status == -signal.SIGKILL
    assert crashed.new_epoch > crashed.old_epoch
    assert_fenced(recorder, cluster)


async def test_paused_api_server_silences_the_leader_until_it_returns(
    scenario: tuple[Cluster, SnapshotRecorder], kube_api: KubeApi, kube_namespace: str
) -> None:
    cluster, recorder = scenario
    config = cluster.config
    await start_watched(cluster, recorder, 3)
    holder = await wait_for_holder(kube_api.kubectl, kube_namespace, config.lease_name, bool, 30)
    await recorder.wait_for(lambda s: s.leader == holder, 15, "a first snapshot")

    silent_for = SHORT.lease_s + 4 * SHORT.retry_s
    kube_api.pause()
    try:
        paused_at = time.time()
        paused_mono = time.monotonic()
        await asyncio.sleep(silent_for)
        resumed_at = time.time()
    finally:
        kube_api.resume()
    resumed_mono = time.monotonic()
    dead = {pod.name: pod.process.returncode for pod in cluster.pods if not pod.alive()}
    assert not dead, f"pods died while the API server was paused (exit status): {dead}"

    limit = paused_at + SHORT.renew_deadline_s
    during = [s for s in recorder.mine(config.prefix) if paused_mono <= s.received_at]
    late = [s for s in during if limit < s.generated_at < resumed_at]
    assert not late, f"published after the renew deadline ({limit:.3f}) while paused: {late[:3]}"

    # after the API server returns, exactly one leader publishes again
    back = await recorder.wait_for(
        lambda s: s.received_at > resumed_mono and s.generated_at > resumed_at,
        SHORT.lease_s + 4 * SHORT.retry_s + 5,
        "snapshot after resume",
    )
    print(f"first snapshot {back.received_at - resumed_mono:.2f} s after resume: {back}")
    await asyncio.sleep(3)
    after = [s for s in recorder.mine(config.prefix) if s.generated_at > resumed_at]
    assert {s.leader for s in after} == {back.leader}, {(s.leader, s.epoch) for s in after}
    assert {s.observer for s in after} == {pod.name for pod in cluster.pods}
    answers = await leaders_by_api(cluster)
    leading = [name for name, a in answers.items() if a["this_pod_leads"]]
    assert leading == [cluster.by_identity(back.leader).name], answers
    spec = lease_spec(kube_api.kubectl, kube_namespace, config.lease_name)
    assert spec is not None
    assert spec["holderIdentity"] == back.leader
    assert_fenced(recorder, cluster)


# -- bad configuration: one line, exit status 2 --------------------------------------


def assert_one_error_line(status: int, stdout: str, stderr: str, *needles: str) -> str:
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert status == 2, f"status {status}:\n{stdout}\n{stderr}"
    assert len(lines) == 1, f"expected one line, got:\n{stdout}\n{stderr}"
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def offline_env(**values: str) -> dict[str, str]:
    return (
        clean_environment()
        | {
            "AGG_HTTP_HOST": "127.0.0.1",
            "AGG_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "AGG_HAZELCAST_MEMBERS": "127.0.0.1:1",
        }
        | values
    )


def test_lease_timings_out_of_order() -> None:
    env = offline_env(
        AGG_LEASE_NAMESPACE="default",
        AGG_LEASE_DURATION_SECONDS="5",
        AGG_RENEW_DEADLINE_SECONDS="10",
    )
    line = assert_one_error_line(*run_to_exit(env), "AGG_LEASE_DURATION_SECONDS")
    assert "AGG_RENEW_DEADLINE_SECONDS" in line


def test_missing_namespace_outside_a_cluster(kube_api: KubeApi, tmp_path: Path) -> None:
    config = json.loads(kube_api.kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"].pop("namespace", None)
    no_namespace = tmp_path / "no-namespace.kubeconfig"
    no_namespace.write_text(json.dumps(config))
    # through KUBECONFIG (no AGG_KUBECONFIG, no AGG_LEASE_NAMESPACE, no POD_NAMESPACE)
    env = offline_env(KUBECONFIG=str(no_namespace))
    assert_one_error_line(*run_to_exit(env), "namespace", "AGG_LEASE_NAMESPACE")
    # and through AGG_KUBECONFIG
    env = offline_env(AGG_KUBECONFIG=str(no_namespace))
    assert_one_error_line(*run_to_exit(env), "namespace", "AGG_LEASE_NAMESPACE")


def test_no_permission_on_leases(kube_api: KubeApi, kube_namespace: str, tmp_path: Path) -> None:
    token = kube_api.service_account_token(kube_namespace, "no-role")
    config = kube_api.token_kubeconfig(tmp_path / "sa.kubeconfig", token, namespace=kube_namespace)
    env = offline_env(AGG_KUBECONFIG=str(config), AGG_LEASE_NAMESPACE=kube_namespace)
    line = assert_one_error_line(*run_to_exit(env), "lease")
    assert "forbidden" in line.lower() or "permission" in line.lower(), line
