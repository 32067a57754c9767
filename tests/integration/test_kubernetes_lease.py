"""KubernetesLease against the local kube-apiserver: what kubectl shows, RBAC for a
ServiceAccount, refusals, metadata kept across replaces, a paused server, and no
worker thread left behind by a watch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aggregator.adapters.kubernetes import KubernetesLease, from_environment
from aggregator.adapters.kubernetes.errors import LeaseRejected
from aggregator.ports.lease import LeaseForbidden, LeaseSpec, LeaseUnavailable
from tests.fixtures.kube import KubeApi

pytestmark = pytest.mark.kube

LEASE = "stream-aggregator"
REQUEST_TIMEOUT_S = 1.0
SERVICE_ACCOUNT = "aggregator"


def held(holder: str, transitions: int = 0) -> LeaseSpec:
    now = time.time()
    return LeaseSpec(
        holder_identity=holder,
        lease_duration_seconds=15,
        acquire_time=now,
        renew_time=now,
        lease_transitions=transitions,
    )


def released(spec: LeaseSpec) -> LeaseSpec:
    return LeaseSpec(
        holder_identity="",
        lease_duration_seconds=1,
        acquire_time=spec.acquire_time,
        renew_time=time.time(),
        lease_transitions=spec.lease_transitions,
    )


def lease_role(lease: str, verbs_on_the_lease: list[str]) -> dict[str, Any]:
    """The Role a pod needs: create cannot be limited to a name; everything else is
    limited to the one lease."""
    return {
        "metadata": {"name": "stream-aggregator-lease"},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [lease],
                "verbs": verbs_on_the_lease,
            },
        ],
    }


def bind(admin: client.ApiClient, namespace: str, role: dict[str, Any]) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, client.V1Role.model_validate(role))
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding.model_validate(
            {
                "metadata": {"name": "stream-aggregator-lease"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": role["metadata"]["name"],
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
                ],
            }
        ),
    )


async def eventually_readable(lease: KubernetesLease, timeout_s: float = 10.0) -> None:
    """RBAC changes reach the authorizer through an informer: allow a short lag."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await lease.get()
            return
        except LeaseForbidden:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def admin(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    with kube_api.api_client() as api:
        yield api


@pytest.fixture
def lease(kube_api: KubeApi, kube_namespace: str) -> Iterator[KubernetesLease]:
    opened = from_environment(LEASE, kube_namespace, str(kube_api.kubeconfig), REQUEST_TIMEOUT_S)
    yield opened
    opened.close()


def kubectl_lease(kube_api: KubeApi, namespace: str) -> dict[str, Any]:
    shown = kube_api.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    obj: dict[str, Any] = json.loads(shown.stdout)
    return obj


# --- what kubectl shows -------------------------------------------------------------


async def test_kubectl_get_lease_shows_the_holder_we_wrote(
    kube_api: KubeApi, kube_namespace: str, lease: KubernetesLease
) -> None:
    created = await lease.create(held("aggregator-7d9f_ab12"))
    listed = kube_api.kubectl("get", "lease", "-n", kube_namespace)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "HOLDER"]
    assert row.split()[:2] == [LEASE, "aggregator-7d9f_ab12"]

    # A release writes holderIdentity "" (not absent) and MicroTime with 6 digits.
    await lease.replace(created.resource_version, released(created.spec))
    spec = kubectl_lease(kube_api, kube_namespace)["spec"]
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    for key in ("acquireTime", "renewTime"):
        assert len(spec[key]) == len("2024-05-01T12:00:00.000000Z"), spec[key]
        assert spec[key].endswith("Z")


async def test_a_replace_keeps_labels_and_annotations_set_by_others(
    kube_api: KubeApi, kube_namespace: str, lease: KubernetesLease
) -> None:
    await lease.create(held("pod-a_1"))
    for args in (("label", "team=crash"), ("annotate", "note=keep me")):
        done = kube_api.kubectl(args[0], "lease", LEASE, "-n", kube_namespace, args[1])
        assert done.returncode == 0, done.stderr
    read = await lease.get()
    assert read is not None
    await lease.replace(read.resource_version, held("pod-a_1"))
    metadata = kubectl_lease(kube_api, kube_namespace)["metadata"]
    assert metadata["labels"] == {"team": "crash"}
    assert metadata["annotations"] == {"note": "keep me"}


# --- RBAC for the pod's ServiceAccount --------------------------------------------------


async def test_a_service_account_without_rbac_is_forbidden_with_a_clear_message(
    kube_api: KubeApi, kube_namespace: str
) -> None:
    token = kube_api.service_account_token(kube_namespace, SERVICE_ACCOUNT)
    with kube_api.token_client(token) as as_pod:
        lease = KubernetesLease(as_pod, kube_namespace, LEASE, REQUEST_TIMEOUT_S)
        with pytest.raises(LeaseForbidden) as denied:
            await lease.get()
        message = str(denied.value)
        assert message.startswith(f"forbidden to get lease {kube_namespace}/{LEASE} (403 ")
        assert f"system:serviceaccount:{kube_namespace}:{SERVICE_ACCOUNT}" in message
        with pytest.raises(LeaseForbidden, match=f"^forbidden to create lease {kube_namespace}/"):
            await lease.create(held("pod-a_1"))


async def test_a_service_account_with_the_lease_role_reads_writes_and_watches(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    token = kube_api.service_account_token(kube_namespace, SERVICE_ACCOUNT)
    bind(admin, kube_namespace, lease_role(LEASE, ["get", "update", "watch"]))
    client.CoordinationV1Api(admin).create_namespaced_lease(
        kube_namespace,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="someone-elses"),
            spec=client.V1LeaseSpec(holder_identity="x", lease_duration_seconds=15),
        ),
    )
    # As a pod would run outside a cluster: a kubeconfig whose context names the
    # namespace, and no namespace given.
    config = kube_api.token_kubeconfig(tmp_path / "pod.kubeconfig", token, namespace=kube_namespace)
    lease = from_environment(LEASE, None, str(config), REQUEST_TIMEOUT_S)
    try:
        assert lease.description == f"{kube_namespace}/{LEASE}"
        await eventually_readable(lease)
        assert await lease.get() is None
        created = await lease.create(held("pod-a_1"))
        waiting = asyncio.create_task(lease.wait_for_change(created.resource_version, 10.0))
        await asyncio.sleep(0.3)
        renewed = await lease.replace(created.resource_version, held("pod-a_1"))
        await asyncio.wait_for(waiting, 3.0)
        assert renewed.resource_version != created.resource_version

        # update is granted on this lease only.
        with kube_api.token_client(token) as as_pod:
            other = KubernetesLease(as_pod, kube_namespace, "someone-elses", REQUEST_TIMEOUT_S)
            with pytest.raises(LeaseForbidden, match=r"^forbidden to get lease"):
                await other.get()
            with pytest.raises(LeaseForbidden, match=r"^forbidden to update lease"):
                await other.replace("1", held("pod-a_1"))
    finally:
        lease.close()


async def test_without_watch_on_the_lease_waiting_for_a_change_is_forbidden(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str
) -> None:
    token = kube_api.service_account_token(kube_namespace, SERVICE_ACCOUNT)
    bind(admin, kube_namespace, lease_role(LEASE, ["get", "update"]))
    with kube_api.token_client(token) as as_pod:
        lease = KubernetesLease(as_pod, kube_namespace, LEASE, REQUEST_TIMEOUT_S)
        await eventually_readable(lease)
        created = await lease.create(held("pod-a_1"))
        await lease.replace(created.resource_version, held("pod-a_1"))
        with pytest.raises(LeaseForbidden, match=f"^forbidden to watch lease {kube_namespace}/"):
            await lease.wait_for_change(created.resource_version, 5.0)


# --- refusals -----------------------------------------------------------------------


async def test_a_negative_duration_is_refused_with_the_servers_reason(
    lease: KubernetesLease, kube_namespace: str
) -> None:
    bad = LeaseSpec("pod-a_1", -1, None, None, 0)
    with pytest.raises(LeaseRejected) as refused:
        await lease.create(bad)
    assert str(refused.value).startswith(
        f"the API server refused to create lease {kube_namespace}/{LEASE} (422 Invalid: "
    )
    assert "spec.leaseDurationSeconds" in str(refused.value)


async def test_a_missing_namespace_is_refused_not_retried_as_unavailable(
    kube_api: KubeApi,
) -> None:
    lease = from_environment(LEASE, "no-such-namespace", str(kube_api.kubeconfig), 1.0)
    try:
        assert await lease.get() is None
        with pytest.raises(LeaseRejected, match="404 NotFound"):
            await lease.create(held("pod-a_1"))
    finally:
        lease.close()


# --- a paused API server ------------------------------------------------------------------


async def test_a_paused_api_server_is_unavailable_within_the_request_timeout(
    kube_api: KubeApi, kube_namespace: str, lease: KubernetesLease, admin: client.ApiClient
) -> None:
    created = await lease.create(held("pod-a_1"))
    # A client with urllib3's default retries (3) would take 4 request timeouts;
    # the adapter still gives up a moment after one.
    retrying = KubernetesLease(admin, kube_namespace, LEASE, REQUEST_TIMEOUT_S)
    assert await retrying.get() == created
    kube_api.pause()
    try:
        for name, call in [
            ("get", lease.get),
            ("update", lambda: lease.replace(created.resource_version, held("pod-a_1"))),
            ("create", lambda: lease.create(held("pod-b_2"))),
            ("get (retrying client)", retrying.get),
        ]:
            started = time.monotonic()
            with pytest.raises(LeaseUnavailable):
                await call()
            took = time.monotonic() - started
            assert 0.9 <= took < 1.6, f"{name} took {took:.2f} s"
        # No answer is a timeout, never an error, whichever timer fires first: a
        # wait as long as the request timeout, and one longer than it.
        for wait_s in (REQUEST_TIMEOUT_S, 2 * REQUEST_TIMEOUT_S):
            started = time.monotonic()
            await lease.wait_for_change(created.resource_version, wait_s)
            took = time.monotonic() - started
            assert wait_s - 0.05 <= took < wait_s + 0.3, f"a {wait_s} s wait took {took:.2f} s"
    finally:
        kube_api.resume()
    assert (await lease.get()) == created


# --- threads ------------------------------------------------------------------------


async def test_wait_for_change_leaves_no_worker_thread_behind(lease: KubernetesLease) -> None:
    created = await lease.create(held("pod-a_1"))
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="watch-test")
    loop.set_default_executor(executor)
    try:
        # Returns at 0.3 s; the server would end the watch only after 1 s.
        await lease.wait_for_change(created.resource_version, 0.3)
        waiting = asyncio.create_task(lease.wait_for_change(created.resource_version, 30.0))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        started = time.monotonic()
        executor.shutdown(wait=True)
        assert time.monotonic() - started < 0.3
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
