"""The node cluster's certificates: one CA for everything, one for the front proxy.

Made with the same openssl steps as the loopback API server's (infra/kube/pki.py),
in :data:`layout.PKI_DIR`, and remade by every ``up`` after a ``down`` (which
removes the folder).  Identities follow kubeadm's, so the default RBAC bindings
apply: ``system:node:<name>`` in ``system:nodes``, ``system:kube-proxy``,
``system:kube-controller-manager``, ``system:kube-scheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.kube.pki import Openssl, build_in_place
from infra.node import layout

ADMIN_USER = "agg-node-admin"

#: name -> (subject, usage, subject alternative names)
_LEAVES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "apiserver": (
        "/CN=kube-apiserver",
        "serverAuth",
        (
            f"IP:{layout.NODE_IP}",
            "IP:127.0.0.1",
            f"IP:{layout.KUBERNETES_SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            f"DNS:kubernetes.default.svc.{layout.CLUSTER_DOMAIN}",
        ),
    ),
    "admin": (f"/O=system:masters/CN={ADMIN_USER}", "clientAuth", ()),
    # the API server's identity towards kubelet (logs, exec, port-forward)
    "apiserver-kubelet-client": (
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
        (),
    ),
    "kubelet": (f"/O=system:nodes/CN=system:node:{layout.NODE_NAME}", "clientAuth", ()),
    "kubelet-serving": (
        f"/O=system:nodes/CN=system:node:{layout.NODE_NAME}",
        "serverAuth",
        (f"IP:{layout.NODE_IP}", f"DNS:{layout.NODE_NAME}"),
    ),
    "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", ()),
    "scheduler": ("/CN=system:kube-scheduler", "clientAuth", ()),
    "kube-proxy": ("/CN=system:kube-proxy", "clientAuth", ()),
}


@dataclass(frozen=True)
class NodePki:
    directory: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    @property
    def front_proxy_ca(self) -> Path:
        return self.cert("front-proxy-ca")

    @property
    def sa_private(self) -> Path:
        return self.key("sa")

    @property
    def sa_public(self) -> Path:
        return self.directory / "sa.pub"

    def complete(self) -> bool:
        wanted = [self.ca, self.front_proxy_ca, self.cert("front-proxy-client"), self.sa_public]
        wanted += [self.cert(name) for name in _LEAVES]
        return all(path.is_file() and path.stat().st_size > 0 for path in wanted)


def _generate(openssl: Openssl) -> None:
    openssl.ca("ca", "stream-aggregator-node-ca")
    for name, (subject, usage, names) in _LEAVES.items():
        openssl.leaf(name, subject, usage=usage, names=names)
    openssl.ca("front-proxy-ca", "stream-aggregator-node-front-proxy-ca")
    openssl.leaf(
        "front-proxy-client", "/CN=front-proxy-client", usage="clientAuth", ca="front-proxy-ca"
    )
    openssl.signing_pair("sa")


def ensure() -> NodePki:
    pki = NodePki(layout.PKI_DIR)
    if not pki.complete():
        build_in_place(layout.PKI_DIR, _generate)
    return pki
