"""Cluster add-ons the node runs as pods: CoreDNS and metrics-server.

Their manifests are in :file:`addons/`; ``${IMAGE}`` and ``${DNS_IP}`` are filled
in here.  Both images are the ones built on this machine (imagePullPolicy Never).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from infra.kube import control_plane
from infra.node import images, layout, network
from infra.process import InfraError

MANIFESTS = Path(__file__).resolve().parent / "addons"


def kubectl(
    *args: str, stdin: str | None = None, timeout_s: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """The built kubectl against the node's API server as its admin (never raises on exit code).

    Raises ``InfraError`` when the bridge does not hold the node address: the API
    server's address would then be routed off the machine."""
    if not network.carries_node_address():
        raise InfraError(f"the node is down: {layout.BRIDGE} does not carry {layout.NODE_IP}")
    return control_plane.kubectl(
        *args, kubeconfig=layout.kubeconfig_path(), stdin=stdin, timeout_s=timeout_s
    )


def kubectl_checked(*args: str, stdin: str | None = None, timeout_s: float = 120.0) -> str:
    result = kubectl(*args, stdin=stdin, timeout_s=timeout_s)
    if result.returncode != 0:
        raise InfraError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def manifest(name: str, image: images.Image) -> str:
    text = (MANIFESTS / f"{name}.yaml").read_text()
    return text.replace("${IMAGE}", image.name).replace("${DNS_IP}", layout.DNS_SERVICE_IP)


def apply() -> float:
    """Apply both add-ons and wait until they serve; return the seconds it took."""
    started = time.monotonic()
    for name, image in (("coredns", images.COREDNS), ("metrics-server", images.METRICS_SERVER)):
        kubectl_checked(
            "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest(name, image)
        )
    for deployment in ("coredns", "metrics-server"):
        result = kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            f"deployment/{deployment}",
            "--timeout=180s",
            timeout_s=200,
        )
        if result.returncode != 0:
            pods = kubectl("-n", "kube-system", "get", "pods", "-o", "wide").stdout
            raise InfraError(
                f"the {deployment} add-on did not become ready: {result.stderr.strip()}\n{pods}"
                f"see: kubectl --kubeconfig {layout.kubeconfig_path()} -n kube-system describe pods"
            )
    result = kubectl(
        "wait",
        "apiservice/v1beta1.metrics.k8s.io",
        "--for=condition=Available",
        "--timeout=120s",
        timeout_s=140,
    )
    if result.returncode != 0:
        raise InfraError(f"metrics.k8s.io is not available: {result.stderr.strip()}")
    return time.monotonic() - started
