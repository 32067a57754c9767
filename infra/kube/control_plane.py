"""Start and stop etcd + kube-apiserver on loopback, and write the kubeconfig.

- etcd: client http://127.0.0.1:12379, peer 12380, data in ``<state>/kube/etcd``.
  Starting etcd wipes its data, so every start is an empty cluster; restarting
  only the API server keeps it.
- kube-apiserver: https://127.0.0.1:16443, RBAC (``Node,RBAC``), serving cert and
  client CA from ``<state>/kube/pki``, ServiceAccount issuer and signing keys so
  TokenRequest works.  No controller-manager or scheduler runs: API semantics
  only (so no pods run, no default ServiceAccount appears by itself, and a
  deleted namespace is finalized by whoever deletes it; see tests/fixtures/kube.py).
- ``<state>/kube/kubeconfig``: admin identity (client cert in group
  system:masters), with the certificates embedded so the file stands alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.kube import build, etcd
from infra.kube.pki import ADMIN_USER, Pki, ensure_pki
from infra.paths import state_dir
from infra.process import InfraError, ServerProcess, port_open, require_free_port

HOST = "127.0.0.1"
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 16443
SERVICE_CIDR = "10.96.0.0/12"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTEXT = "stream-aggregator-test"

ETCD = ServerProcess("kube-etcd")
APISERVER = ServerProcess("kube-apiserver")

ETCD_URL = f"http://{HOST}:{ETCD_CLIENT_PORT}"
SERVER_URL = f"https://{HOST}:{APISERVER_PORT}"


def kube_state() -> Path:
    path = state_dir() / "kube"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kubeconfig_path() -> Path:
    return kube_state() / "kubeconfig"


def pki() -> Pki:
    return ensure_pki(kube_state() / "pki")


@dataclass(frozen=True)
class Started:
    """What ``up`` did: which servers it started and how long each took."""

    etcd_seconds: float | None
    apiserver_seconds: float | None


def _etcd_healthy() -> bool:
    with urllib.request.urlopen(f"{ETCD_URL}/health", timeout=2) as response:
        body: dict[str, object] = json.loads(response.read())
    return body.get("health") == "true"


def _admin_context(keys: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(keys.ca_cert))
    context.load_cert_chain(str(keys.admin_cert), str(keys.admin_key))
    return context


def apiserver_ready(keys: Pki | None = None, timeout_s: float = 2.0) -> bool:
    """True when /readyz answers 200 (all post-start hooks, RBAC bootstrap included)."""
    keys = keys or pki()
    try:
        with urllib.request.urlopen(
            f"{SERVER_URL}/readyz", context=_admin_context(keys), timeout=timeout_s
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _start_etcd(binary: Path) -> float:
    require_free_port(HOST, ETCD_CLIENT_PORT, "etcd (client)")
    require_free_port(HOST, ETCD_PEER_PORT, "etcd (peer)")
    data = kube_state() / "etcd"
    shutil.rmtree(data, ignore_errors=True)
    started = time.monotonic()
    peer = f"http://{HOST}:{ETCD_PEER_PORT}"
    ETCD.start(
        [
            str(binary),
            "--name=stream-aggregator-test",
            f"--data-dir={data}",
            f"--listen-client-urls={ETCD_URL}",
            f"--advertise-client-urls={ETCD_URL}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=stream-aggregator-test={peer}",
            "--initial-cluster-state=new",
            # Test data only: skip fsync so writes are not bound by the disk.
            "--unsafe-no-fsync=true",
            "--logger=zap",
            "--log-level=warn",
        ]
    )
    ETCD.wait_ready(_etcd_healthy, timeout_s=30, what=f"etcd on {ETCD_URL}")
    return time.monotonic() - started


def apiserver_argv(binary: Path, keys: Pki) -> list[str]:
    return [
        str(binary),
        f"--advertise-address={HOST}",
        f"--bind-address={HOST}",
        f"--secure-port={APISERVER_PORT}",
        f"--etcd-servers={ETCD_URL}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--client-ca-file={keys.ca_cert}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={keys.sa_public}",
        f"--service-account-signing-key-file={keys.sa_private}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # A loopback address is not a valid Endpoints address, so do not publish
        # the "kubernetes" Service endpoints at all (no in-cluster traffic here).
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def _start_apiserver(binary: Path, keys: Pki) -> float:
    require_free_port(HOST, APISERVER_PORT, "kube-apiserver")
    started = time.monotonic()
    APISERVER.start(apiserver_argv(binary, keys))
    APISERVER.wait_ready(
        lambda: apiserver_ready(keys), timeout_s=120, what=f"kube-apiserver on {SERVER_URL}"
    )
    return time.monotonic() - started


def cert_credentials(cert: Path, key: Path) -> dict[str, str]:
    """A kubeconfig user that authenticates with a client certificate (embedded)."""
    return {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}


def _b64(file: Path) -> str:
    return base64.b64encode(file.read_bytes()).decode()


def write_config(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    user: str,
    credentials: dict[str, str],
    namespace: str = "default",
    context: str = CONTEXT,
) -> Path:
    """A kubeconfig for kubectl and the Python client (JSON, which is valid YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": user, "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(config, indent=2) + "\n")
    partial.chmod(0o600)
    partial.rename(path)
    return path


def write_kubeconfig(keys: Pki, path: Path | None = None) -> Path:
    """The admin kubeconfig: client certificate in group system:masters."""
    credentials = cert_credentials(keys.admin_cert, keys.admin_key)
    return write_config(
        path or kubeconfig_path(),
        server=SERVER_URL,
        ca_cert=keys.ca_cert,
        user=ADMIN_USER,
        credentials=credentials,
    )


def write_token_kubeconfig(path: Path, token: str, *, user: str, namespace: str) -> Path:
    """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
    return write_config(
        path,
        server=SERVER_URL,
        ca_cert=pki().ca_cert,
        user=user,
        credentials={"token": token},
        namespace=namespace,
    )


def require_installed() -> tuple[build.KubeBinaries, Path]:
    binaries = build.binaries()
    if not binaries.present():
        raise InfraError(
            f"kube-apiserver/kubectl {binaries.version} are not built in {binaries.bin_dir}; "
            "run: python -m infra install kube"
        )
    etcd_binary = etcd.binary()
    if etcd_binary is None:
        raise InfraError(f"etcd ({etcd.source()}) is not installed; run: {etcd.how_to_install()}")
    return binaries, etcd_binary


def up() -> Started:
    """Start what is not running yet; return once the API server is ready."""
    binaries, etcd_binary = require_installed()
    keys = pki()
    write_kubeconfig(keys)
    etcd_seconds = apiserver_seconds = None
    if not ETCD.running():
        if APISERVER.running():  # an API server without its etcd is useless
            APISERVER.stop()
        etcd_seconds = _start_etcd(etcd_binary)
    if not APISERVER.running():
        apiserver_seconds = _start_apiserver(binaries.apiserver, keys)
    elif not apiserver_ready(keys, timeout_s=5):
        APISERVER.wait_ready(
            lambda: apiserver_ready(keys), timeout_s=60, what=f"kube-apiserver on {SERVER_URL}"
        )
    return Started(etcd_seconds, apiserver_seconds)


def down() -> None:
    # A paused (SIGSTOPped) server would hold SIGTERM until continued.
    with contextlib.suppress(InfraError):
        APISERVER.resume()
    APISERVER.stop()
    ETCD.stop()


def status_lines() -> list[str]:
    binaries = build.binaries()
    etcd_binary = etcd.binary()
    lines = [
        f"kube-apiserver/kubectl {binaries.version}: "
        + (str(binaries.bin_dir) if binaries.present() else "not built"),
        f"etcd ({etcd.source()}): "
        + (f"{etcd_binary} v{etcd.version(etcd_binary)}" if etcd_binary else "not installed"),
    ]
    for proc, where in ((ETCD, ETCD_URL), (APISERVER, SERVER_URL)):
        pid = proc.pid()
        state = f"running (pid {pid}) on {where}" if pid else "stopped"
        lines.append(f"{proc.name}: {state}; log {proc.log_file}")
    if APISERVER.running():
        lines.append(f"ready: {apiserver_ready()}; kubeconfig: {kubeconfig_path()}")
    elif port_open(HOST, APISERVER_PORT):
        lines.append(f"port {APISERVER_PORT} is taken by a process we did not start")
    return lines


def kubectl(
    *args: str,
    kubeconfig: Path | None = None,
    stdin: str | None = None,
    timeout_s: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run the built kubectl against the local API server (never raises on exit code).

    Uses the admin kubeconfig unless another one (e.g. a ServiceAccount's, or the
    local node's) is given.
    """
    config = kubeconfig or kubeconfig_path()
    return subprocess.run(
        [str(build.binaries().kubectl), f"--kubeconfig={config}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
