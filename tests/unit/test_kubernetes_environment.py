"""Where the lease lives and how the API server is reached, from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.adapters.kubernetes.environment import (
    UNKNOWN_NAMESPACE,
    from_environment,
    load_configuration,
    own_container,
    resolve_namespace,
)

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:16999
    insecure-skip-tls-verify: true
users:
- name: someone
  user:
    token: not-a-real-token
contexts:
- name: with-namespace
  context: {cluster: local, user: someone, namespace: from-context}
- name: without-namespace
  context: {cluster: local, user: someone}
current-context: CURRENT
"""


def kubeconfig(tmp_path: Path, current: str = "with-namespace") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.replace("CURRENT", current), encoding="utf-8")
    return path


def namespace_file(tmp_path: Path, content: str | None) -> Path:
    path = tmp_path / "namespace"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("explicit", "file", "pod_namespace", "context", "expected"),
    [
        ("explicit", "from-file", "from-env", "from-context", "explicit"),
        (None, "from-file\n", "from-env", "from-context", "from-file"),
        (None, None, "from-env", "from-context", "from-env"),
        (None, None, None, "from-context", "from-context"),
        ("", "  ", "", "from-context", "from-context"),
    ],
)
def test_namespace_explicit_then_pod_then_kubeconfig_context(
    tmp_path: Path,
    explicit: str | None,
    file: str | None,
    pod_namespace: str | None,
    context: str | None,
    expected: str,
) -> None:
    environ = {} if pod_namespace is None else {"POD_NAMESPACE": pod_namespace}
    resolved = resolve_namespace(
        explicit,
        environ,
        namespace_file=namespace_file(tmp_path, file),
        context_namespace=context,
    )
    assert resolved == expected


def test_no_namespace_anywhere_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^lease namespace unknown outside a cluster: set AGG_"):
        resolve_namespace(None, {}, namespace_file=namespace_file(tmp_path, None))
    assert UNKNOWN_NAMESPACE.endswith("set AGG_LEASE_NAMESPACE")


def test_kubeconfig_gives_server_and_context_namespace_and_no_urllib3_retries(
    tmp_path: Path,
) -> None:
    configuration, namespace = load_configuration(str(kubeconfig(tmp_path)), {})
    assert configuration.host == "https://127.0.0.1:16999"
    assert namespace == "from-context"
    assert configuration.retries is False


def test_kubeconfig_from_the_environment_variable(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, current="without-namespace")
    configuration, namespace = load_configuration(None, {"KUBECONFIG": str(path)})
    assert configuration.host == "https://127.0.0.1:16999"
    assert namespace is None


def test_an_explicit_kubeconfig_wins_over_in_cluster(tmp_path: Path) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    configuration, _ = load_configuration(str(kubeconfig(tmp_path)), environ)
    assert configuration.host == "https://127.0.0.1:16999"


def test_a_missing_kubeconfig_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=r"^not in a cluster \(KUBERNETES_SERVICE_HOST unset\)"):
        load_configuration(str(missing), {})


def test_in_cluster_without_a_service_account_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client's in-cluster loader reads os.environ and the ServiceAccount files,
    # which do not exist on this machine.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST is set but the in-cluster"):
        load_configuration(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_from_environment_builds_a_lease_on_its_own_client(tmp_path: Path) -> None:
    lease = from_environment(
        "stream-aggregator",
        None,
        str(kubeconfig(tmp_path)),
        1.5,
        environ={},
        namespace_file=namespace_file(tmp_path, None),
    )
    try:
        assert lease.description == "from-context/stream-aggregator"
        assert lease.request_timeout_s == 1.5
    finally:
        lease.close()


def test_from_environment_without_a_namespace_fails_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lease namespace unknown"):
        from_environment(
            "stream-aggregator",
            None,
            str(kubeconfig(tmp_path, current="without-namespace")),
            1.5,
            environ={},
            namespace_file=namespace_file(tmp_path, None),
        )


UID = "6976e233-c5e8-430c-bde2-cfea1e95f452"
CID = "8ebb06d0d475fbc4925bb039646aa03c160d39a9ae636ebda8e482c93a40984a"
IN_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "POD_UID": UID}


def test_a_containers_init_in_a_pod_names_its_pod_and_container(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(f"4:memory:/kubepods/burstable/pod{UID}/{CID}\n0::/kubepods/pod{UID}/{CID}\n")
    assert own_container(IN_POD, cgroup_file=cgroup, pid=1) == (UID, CID)
    # anything short of all of it: no proof-capable identity, the lease only expires
    assert own_container(IN_POD, cgroup_file=cgroup, pid=7) is None  # not the init
    assert own_container({"POD_UID": UID}, cgroup_file=cgroup, pid=1) is None  # no cluster
    no_uid = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    assert own_container(no_uid, cgroup_file=cgroup, pid=1) is None
    assert own_container(IN_POD, cgroup_file=tmp_path / "absent", pid=1) is None
    cgroup.write_text("0::/\n")  # a private cgroup namespace hides the container
    assert own_container(IN_POD, cgroup_file=cgroup, pid=1) is None
