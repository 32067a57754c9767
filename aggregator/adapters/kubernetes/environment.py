"""Where the Lease lives and how to reach the API server, from the environment.

* Credentials: an explicit kubeconfig path wins; otherwise the pod's
  ServiceAccount (in-cluster config) when ``KUBERNETES_SERVICE_HOST`` is set;
  otherwise ``KUBECONFIG`` (a list, as kubectl reads it) or ~/.kube/config.
* Namespace: the explicit one; else the pod's own namespace (the ServiceAccount
  namespace file, then ``POD_NAMESPACE``); else the namespace of the kubeconfig's
  current context, as kubectl would use; else a clear error.

Problems come out as one ``ValueError`` line, for the CLI to print at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from aggregator.adapters.kubernetes.lease import KubernetesLease
from aggregator.adapters.kubernetes.pods import KubernetesPods
from aggregator.core.incarnation import container_id_from_cgroup

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
POD_NAMESPACE_ENV = "POD_NAMESPACE"
POD_UID_ENV = "POD_UID"
OWN_CGROUP = Path("/proc/self/cgroup")
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_KUBECONFIG = "~/.kube/config"
UNKNOWN_NAMESPACE = "lease namespace unknown outside a cluster: set AGG_LEASE_NAMESPACE"


def from_environment(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    request_timeout_s: float,
    *,
    environ: Mapping[str, str] | None = None,
    namespace_file: Path = NAMESPACE_FILE,
) -> KubernetesLease:
    """A ``KubernetesLease`` on its own ``ApiClient`` (closed by ``lease.close()``)."""
    env = os.environ if environ is None else environ
    configuration, context_namespace = load_configuration(kubeconfig, env)
    chosen = resolve_namespace(
        namespace, env, namespace_file=namespace_file, context_namespace=context_namespace
    )
    return KubernetesLease(
        client.ApiClient(configuration), chosen, name, request_timeout_s, owns_client=True
    )


def in_cluster(environ: Mapping[str, str]) -> bool:
    return bool(environ.get(SERVICE_HOST_ENV))


def load_configuration(
    kubeconfig: str | None, environ: Mapping[str, str]
) -> tuple[client.Configuration, str | None]:
    """The client configuration and the current context's namespace (None in a
    cluster or when the context names none).

    urllib3's retries are turned off: a paused API server must cost one request
    timeout, not four; the elector does its own retrying.
    """
    configuration = client.Configuration()
    context_namespace: str | None = None
    if kubeconfig is None and in_cluster(environ):
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except ConfigException as error:
            raise ValueError(
                f"{SERVICE_HOST_ENV} is set but the in-cluster config cannot be loaded: {error}"
            ) from error
    else:
        path = kubeconfig or environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=configuration, persist_config=False
            )
            _, current = config.list_kube_config_contexts(path)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError) as error:
            raise ValueError(
                f"not in a cluster ({SERVICE_HOST_ENV} unset) and kubeconfig {path} "
                f"cannot be loaded: {error}"
            ) from error
        context_namespace = _context_namespace(current)
    configuration.retries = False
    return configuration, context_namespace


def resolve_namespace(
    explicit: str | None,
    environ: Mapping[str, str],
    *,
    namespace_file: Path = NAMESPACE_FILE,
    context_namespace: str | None = None,
) -> str:
    candidates = (
        explicit,
        _read_namespace_file(namespace_file),
        environ.get(POD_NAMESPACE_ENV),
        context_namespace,
    )
    for candidate in candidates:
        if candidate and candidate.strip():
            return candidate.strip()
    raise ValueError(UNKNOWN_NAMESPACE)


def _read_namespace_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _context_namespace(current: object) -> str | None:
    if not isinstance(current, Mapping):
        return None
    context = current.get("context")
    if not isinstance(context, Mapping):
        return None
    namespace = context.get("namespace")
    return namespace if isinstance(namespace, str) else None


def pods_of(lease: KubernetesLease) -> KubernetesPods:
    """Pod statuses in the lease's namespace, on the lease's own client."""
    return KubernetesPods(lease.api_client, lease.namespace, lease.request_timeout_s)


def own_container(
    environ: Mapping[str, str],
    *,
    cgroup_file: Path | None = None,
    pid: int | None = None,
) -> tuple[str, str] | None:
    """(pod UID, container ID) when kubelet's reports about this process's
    container can prove its death: in a cluster, with the pod's UID given
    (``POD_UID`` from the downward API), as the container's init (PID 1: its exit
    is the container's exit), with the container ID readable from its cgroup.
    None otherwise: this process's lease is then only ever taken on expiry."""
    uid = (environ.get(POD_UID_ENV) or "").strip()
    if not in_cluster(environ) or not uid:
        return None
    if (os.getpid() if pid is None else pid) != 1:
        return None
    try:
        text = (cgroup_file or OWN_CGROUP).read_text(encoding="utf-8")
        container = container_id_from_cgroup(text)
    except OSError:
        return None
    return None if container is None else (uid, container)
