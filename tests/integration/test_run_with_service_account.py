"""``aggregator run`` with nothing but the ServiceAccount of rbac/: a
TokenRequest token in a kubeconfig of its own, real Kafka and Hazelcast. The pod
acquires the Lease, renews it, and on SIGTERM releases it and exits 0, so the
Role is sufficient (and test_manifests.py shows it is minimal).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.pods import free_port
from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer
from tests.fixtures.kube import KubeApi

pytestmark = [pytest.mark.kube, pytest.mark.kafka, pytest.mark.hazelcast, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LEASE = "stream-aggregator"
SERVICE_ACCOUNT = "stream-aggregator"
POD = "test-pod"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 10.0


def apply_rbac(kube_api: KubeApi, namespace: str, where: Path) -> None:
    """rbac/ as it is, moved to ``namespace`` (see test_manifests.py)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n"
        f"  - {os.path.relpath(REPO / 'rbac', where)}\n"
        "transformers:\n"
        "  - |-\n"
        "    apiVersion: builtin\n"
        "    kind: NamespaceTransformer\n"
        "    metadata:\n"
        "      name: namespace\n"
        f"      namespace: {namespace}\n"
        "    setRoleBindingSubjects: allServiceAccounts\n",
        encoding="utf-8",
    )
    applied = kube_api.kubectl("apply", "-k", str(where))
    assert applied.returncode == 0, applied.stderr


def lease_spec(kube_api: KubeApi, namespace: str) -> dict[str, Any] | None:
    shown = kube_api.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json")
    if shown.returncode != 0:
        assert "NotFound" in shown.stderr, shown.stderr
        return None
    spec: dict[str, Any] = json.loads(shown.stdout)["spec"]
    return spec


class Aggregator:
    """``aggregator run`` as a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        script = Path(sys.executable).with_name("aggregator")
        entry = "from aggregator.wiring.cli import main; raise SystemExit(main())"
        command = [str(script)] if script.exists() else [sys.executable, "-c", entry]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [*command, "run"], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


async def eventually(
    probe: Callable[[], Any], timeout_s: float, what: str, aggregator: Aggregator
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if aggregator.process.poll() is not None:
            raise AssertionError(
                f"aggregator exited ({aggregator.process.returncode}) before {what}:\n"
                + aggregator.output()
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{aggregator.output()}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def as_service_account(
    kube_api: KubeApi,
    kube_namespace: str,
    kafka: KafkaServer,
    kafka_topic: str,
    hazelcast: HazelcastCluster,
    tmp_path: Path,
) -> AsyncIterator[tuple[Aggregator, int]]:
    apply_rbac(kube_api, kube_namespace, tmp_path / "rbac")
    token = kube_api.service_account_token(kube_namespace, SERVICE_ACCOUNT, create=False)
    # The only credentials the process gets: no admin kubeconfig, no KUBECONFIG.
    config = kube_api.token_kubeconfig(tmp_path / "pod.kubeconfig", token, namespace=kube_namespace)
    # The authorizer learns about new RBAC objects through an informer; a pod
    # started in that instant would stop at its permission check (exit 2).
    deadline = time.monotonic() + 10
    while (
        kube_api.kubectl("auth", "can-i", "get", f"leases/{LEASE}", kubeconfig=config).stdout
        != "yes\n"
    ):
        assert time.monotonic() < deadline, "rbac/ not in effect after 10 s"
        await asyncio.sleep(0.2)
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AGG_", "KUBE")) and name not in {"POD_NAME", "POD_NAMESPACE"}
    }
    env |= {
        "AGG_KUBECONFIG": str(config),
        "AGG_LEASE_NAMESPACE": kube_namespace,
        "AGG_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "AGG_KAFKA_TOPIC": kafka_topic,
        # a group of its own, so no other test's consumers join its rebalances
        "AGG_KAFKA_GROUP": kafka_topic,
        "AGG_HAZELCAST_MEMBERS": ",".join(hazelcast.members),
        "AGG_HAZELCAST_CLUSTER_NAME": hazelcast.cluster_name,
        "AGG_HTTP_HOST": HOST,
        "AGG_HTTP_PORT": str(port),
        "AGG_LEASE_DURATION_SECONDS": "4",
        "AGG_RENEW_DEADLINE_SECONDS": "3",
        "AGG_RETRY_PERIOD_SECONDS": "1",
        "AGG_POD_NAME": POD,
    }
    aggregator = Aggregator(env, tmp_path / "aggregator.log")
    try:
        yield aggregator, port
    finally:
        aggregator.stop()


async def test_run_acquires_renews_and_releases_the_lease_with_only_its_service_account(
    kube_api: KubeApi, kube_namespace: str, as_service_account: tuple[Aggregator, int]
) -> None:
    aggregator, port = as_service_account
    started = time.monotonic()

    def held_by_us() -> dict[str, Any] | None:
        spec = lease_spec(kube_api, kube_namespace)
        holder = (spec or {}).get("holderIdentity") or ""
        return spec if holder.startswith(f"{POD}_") else None

    acquired: dict[str, Any] = await eventually(
        held_by_us, START_TIMEOUT_S, "lease held by test-pod", aggregator
    )
    acquired_s = time.monotonic() - started
    assert acquired["leaseDurationSeconds"] == 4
    # kubectl shows the holder in its table, as the README says.
    table = kube_api.kubectl("get", "lease", LEASE, "-n", kube_namespace)
    assert acquired["holderIdentity"] in table.stdout, (
        f"{table.stdout}(aggregator exit status {aggregator.process.poll()})\n{aggregator.output()}"
    )

    # The pod's own API agrees that it leads.
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=5.0) as api:

        async def leader_view() -> dict[str, Any] | None:
            try:
                answer = await api.get("/api/leader")
            except httpx.TransportError:
                return None
            view: dict[str, Any] = answer.json()
            return view if answer.status_code == 200 and view.get("this_pod_leads") else None

        deadline = time.monotonic() + 20
        view = await leader_view()
        while view is None:
            assert time.monotonic() < deadline, aggregator.output()
            await asyncio.sleep(0.2)
            view = await leader_view()
        assert view["leader"] == acquired["holderIdentity"]
        # The demo's controls (kill, stop, restart a simulated pod) exist only in the demo.
        assert view["demo"] is False
        for method, path in (("GET", "/api/demo/pods"), ("POST", "/api/demo/pods/x/kill")):
            assert (await api.request(method, path)).status_code == 404, path

    # Renewed every retry period (1 s): renewTime moves, the holder does not.
    def renewed() -> dict[str, Any] | None:
        spec = held_by_us()
        return spec if spec and spec["renewTime"] != acquired["renewTime"] else None

    renewal: dict[str, Any] = await eventually(renewed, 5.0, "renewal", aggregator)
    assert renewal["holderIdentity"] == acquired["holderIdentity"]
    assert renewal["leaseTransitions"] == acquired["leaseTransitions"]

    # SIGTERM: graceful stop releases the Lease and exits 0.
    aggregator.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    deadline = stopping + EXIT_TIMEOUT_S
    while aggregator.process.poll() is None:
        assert time.monotonic() < deadline, f"still running after SIGTERM:\n{aggregator.output()}"
        await asyncio.sleep(0.1)
    stopped_s = time.monotonic() - stopping
    assert aggregator.process.returncode == 0, aggregator.output()
    released = lease_spec(kube_api, kube_namespace)
    assert released is not None
    assert released["holderIdentity"] == "", released
    assert released["leaseDurationSeconds"] == 1, released
    assert "Forbidden" not in aggregator.output()
    print(f"lease acquired {acquired_s:.1f} s after start; SIGTERM to exit {stopped_s:.1f} s")
