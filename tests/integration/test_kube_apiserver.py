"""The local kube-apiserver gives the real semantics leader election relies on.

Against a real API server (built from k8s.io/kubernetes, etcd behind it): Lease
create/replace with resourceVersion conflicts, Lease validation, RBAC for a
ServiceAccount with a TokenRequest-issued token, kubectl output, and pausing the
server.  The first tests need no server: they check how the build derives its
go.mod.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from infra.kube import build
from tests.fixtures.kube import KubeApi

LEASE = "stream-aggregator"

T = TypeVar("T")


def present(value: T | None) -> T:
    """The API models type every field optional; a field the server always sets."""
    assert value is not None
    return value


# --- the build's go.mod (no server needed) -----------------------------------------

_KUBERNETES_GO_MOD_EXCERPT = """\
module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kubectl => ./staging/src/k8s.io/kubectl
\tgithub.com/example/other => github.com/example/other v1.2.3
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
"""


def test_staging_modules_are_read_from_the_kubernetes_go_mod() -> None:
    assert build.staging_modules(_KUBERNETES_GO_MOD_EXCERPT) == [
        "k8s.io/api",
        "k8s.io/client-go",
        "k8s.io/kms",
        "k8s.io/kubectl",
    ]


def test_generated_go_mod_pins_each_staging_module_to_its_published_tag() -> None:
    text = build.go_mod_text("v1.36.3", ["k8s.io/api", "k8s.io/client-go"], "1.26.0")
    assert "require k8s.io/kubernetes v1.36.3" in text
    assert "\tk8s.io/api => k8s.io/api v0.36.3" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.3" in text
    assert "./staging" not in text
    with pytest.raises(Exception, match="not a Kubernetes release"):
        build.staging_version("1.36")


# --- helpers ------------------------------------------------------------------------


@pytest.fixture
def admin(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    with kube_api.api_client() as api:
        yield api


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _lease(name: str, holder: str, duration_s: int = 15) -> client.V1Lease:
    now = _now()
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=duration_s,
            acquire_time=now,
            renew_time=now,
            lease_transitions=0,
        ),
    )


def _api_error(call: Callable[[], object]) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value


def _status(error: ApiException) -> dict[str, Any]:
    """The Status object the API server sent with an error response."""
    status: dict[str, Any] = json.loads(present(error.body))
    return status


def _eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """RBAC changes reach the authorizer through an informer: allow a short lag."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def _grant_lease_reader(admin: client.ApiClient, namespace: str, service_account: str) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="lease-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "list", "watch"],
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="lease-reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="lease-reader"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount", name=service_account, namespace=namespace
                )
            ],
        ),
    )


# --- Leases -------------------------------------------------------------------------


@pytest.mark.kube
def test_lease_create_then_replace_with_a_stale_resource_version_conflicts(
    admin: client.ApiClient, kube_namespace: str
) -> None:
    leases = client.CoordinationV1Api(admin)
    created = leases.create_namespaced_lease(kube_namespace, _lease(LEASE, "pod-a_1x2y"))
    assert present(created.spec).holder_identity == "pod-a_1x2y"
    stale_version = present(created.metadata).resource_version

    # pod-b takes over with the object it read: accepted, new resourceVersion.
    fresh = leases.read_namespaced_lease(LEASE, kube_namespace)
    spec = present(fresh.spec)
    spec.holder_identity = "pod-b_3z4w"
    spec.lease_transitions = 1
    spec.acquire_time = spec.renew_time = _now()
    replaced = leases.replace_namespaced_lease(LEASE, kube_namespace, fresh)
    assert present(replaced.metadata).resource_version != stale_version

    # pod-a renews from its old copy: the server refuses with 409 Conflict.
    present(created.spec).renew_time = _now()
    error = _api_error(lambda: leases.replace_namespaced_lease(LEASE, kube_namespace, created))
    assert error.status == 409
    assert _status(error)["reason"] == "Conflict"

    stored = present(leases.read_namespaced_lease(LEASE, kube_namespace).spec)
    assert stored.holder_identity == "pod-b_3z4w"
    assert stored.lease_transitions == 1

    # Creating it again is a different error: it exists.
    again = _api_error(
        lambda: leases.create_namespaced_lease(kube_namespace, _lease(LEASE, "pod-c_5v6u"))
    )
    assert again.status == 409
    assert _status(again)["reason"] == "AlreadyExists"


@pytest.mark.kube
@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("lease_duration_seconds", 0, "spec.leaseDurationSeconds"),
        ("lease_transitions", -1, "spec.leaseTransitions"),
    ],
)
def test_lease_with_an_invalid_field_is_rejected_by_validation(
    admin: client.ApiClient, kube_namespace: str, field: str, value: int, path: str
) -> None:
    leases = client.CoordinationV1Api(admin)
    lease = _lease(LEASE, "pod-a_1x2y")
    setattr(lease.spec, field, value)
    error = _api_error(lambda: leases.create_namespaced_lease(kube_namespace, lease))
    assert error.status == 422
    status = _status(error)
    assert status["reason"] == "Invalid"
    assert [cause["field"] for cause in status["details"]["causes"]] == [path]
    assert leases.list_namespaced_lease(kube_namespace).items == []


# --- kubectl ------------------------------------------------------------------------


@pytest.mark.kube
def test_kubectl_get_lease_prints_the_holder(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str
) -> None:
    client.CoordinationV1Api(admin).create_namespaced_lease(
        kube_namespace, _lease(LEASE, "aggregator-7d9f_ab12")
    )
    listed = kube_api.kubectl("get", "lease", "-n", kube_namespace)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "HOLDER"]
    assert row.split()[:2] == [LEASE, "aggregator-7d9f_ab12"]


@pytest.mark.kube
def test_kubectl_reports_the_pinned_server_version(kube_api: KubeApi) -> None:
    shown = kube_api.kubectl("version", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    versions = json.loads(shown.stdout)
    assert versions["serverVersion"]["gitVersion"] == build.KUBE_VERSION
    assert versions["clientVersion"]["gitVersion"] == build.KUBE_VERSION


@pytest.mark.kube
def test_kubectl_auth_can_i_answers_for_a_service_account(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str
) -> None:
    kube_api.service_account_token(kube_namespace, "elector")
    who = f"system:serviceaccount:{kube_namespace}:elector"

    def can_i(verb: str) -> subprocess.CompletedProcess[str]:
        return kube_api.kubectl("auth", "can-i", verb, "leases.coordination.k8s.io",
                                "-n", kube_namespace, f"--as={who}")  # fmt: skip

    before = can_i("get")
    assert (before.returncode, before.stdout.strip()) == (1, "no")

    _grant_lease_reader(admin, kube_namespace, "elector")
    assert _eventually(lambda: can_i("get").stdout.strip() == "yes")
    allowed = can_i("list")
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes")
    # The Role grants reading only.
    denied = can_i("update")
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")


# --- RBAC with a TokenRequest-issued ServiceAccount token ---------------------------


@pytest.mark.kube
def test_service_account_reads_leases_only_after_a_role_binding(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str, tmp_path: Path
) -> None:
    client.CoordinationV1Api(admin).create_namespaced_lease(
        kube_namespace, _lease(LEASE, "pod-a_1x2y")
    )
    token = kube_api.service_account_token(kube_namespace, "elector")

    with kube_api.token_client(token) as as_sa:
        # The token authenticates as the ServiceAccount...
        review = client.AuthenticationV1Api(as_sa).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        who = present(present(review.status).user_info).username
        assert who == f"system:serviceaccount:{kube_namespace}:elector"
        leases = client.CoordinationV1Api(as_sa)

        # ...but without a Role it may not read leases.
        denied = _api_error(lambda: leases.read_namespaced_lease(LEASE, kube_namespace))
        assert denied.status == 403
        assert _status(denied)["reason"] == "Forbidden"
        sa_config = kube_api.token_kubeconfig(
            tmp_path / "elector.kubeconfig", token, namespace=kube_namespace
        )
        refused = kube_api.kubectl("get", "lease", LEASE, kubeconfig=sa_config)
        assert refused.returncode == 1
        assert "Forbidden" in refused.stderr

        _grant_lease_reader(admin, kube_namespace, "elector")

        def can_read() -> bool:
            try:
                leases.read_namespaced_lease(LEASE, kube_namespace)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        assert _eventually(can_read)
        read = leases.read_namespaced_lease(LEASE, kube_namespace)
        assert present(read.spec).holder_identity == "pod-a_1x2y"
        listed = leases.list_namespaced_lease(kube_namespace).items
        assert [present(item.metadata).name for item in listed] == [LEASE]
        shown = kube_api.kubectl(
            "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", kubeconfig=sa_config
        )
        assert (shown.returncode, shown.stdout) == (0, "pod-a_1x2y"), shown.stderr

        # The grant is exactly the Role: no writes, no other namespace.
        write = _api_error(lambda: leases.replace_namespaced_lease(LEASE, kube_namespace, read))
        assert write.status == 403
        elsewhere = _api_error(lambda: leases.list_namespaced_lease("default"))
        assert elsewhere.status == 403


@pytest.mark.kube
def test_an_invalid_token_is_unauthorized(kube_api: KubeApi, kube_namespace: str) -> None:
    with kube_api.token_client("not-a-token") as bogus:
        leases = client.CoordinationV1Api(bogus)
        error = _api_error(lambda: leases.list_namespaced_lease(kube_namespace))
    assert error.status == 401


# --- pausing the API server ---------------------------------------------------------


@pytest.mark.kube
def test_paused_api_server_answers_nothing_until_resumed(
    kube_api: KubeApi, admin: client.ApiClient, kube_namespace: str
) -> None:
    leases = client.CoordinationV1Api(admin)
    leases.create_namespaced_lease(kube_namespace, _lease(LEASE, "pod-a_1x2y"))
    kube_api.pause()
    try:
        assert not kube_api.ready(timeout_s=1.0)
        with pytest.raises(Exception):  # noqa: B017, PT011 - urllib3 timeout types vary
            leases.read_namespaced_lease(LEASE, kube_namespace, _request_timeout=1.0)
    finally:
        kube_api.resume()
    assert kube_api.ready()
    # State survived the pause.
    after = leases.read_namespaced_lease(LEASE, kube_namespace)
    assert present(after.spec).holder_identity == "pod-a_1x2y"
