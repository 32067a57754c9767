"""The node's network: a bridge on the host, the CNI config, and the isolation rule.

Pods get addresses on :data:`layout.BRIDGE` from the CNI bridge and host-local
plugins (Debian's containernetworking-plugins).  The bridge and its address
exist before kubelet starts, because the node address (kubelet's, the API
server's, the Kafka listener's for pods) lives on it.

No traffic leaves the machine: the CNI config never masquerades; the
:data:`layout.ISOLATE_CHAIN` chain, jumped to from FORWARD, drops every packet
that would be forwarded from the bridge to any other interface; and the Service
range is routed to the bridge, so the host's own packets to a Service IP
without kube-proxy's rules stay on the machine too.  ``prohibit`` routes for
the node's ranges (removed last by ``down``) catch what the bridge no longer
carries.  Pod to host (INPUT) and pod to pod, direct or through a Service,
stay allowed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from infra.node import layout
from infra.process import InfraError


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise InfraError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise InfraError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def bridge_exists() -> bool:
    return _ip("link", "show", layout.BRIDGE, check=False).returncode == 0


def up() -> None:
    """Create the bridge with the node address, and the isolation rule (idempotent)."""
    if not bridge_exists():
        _ip("link", "add", layout.BRIDGE, "type", "bridge")
    address = f"{layout.NODE_IP}/{layout.POD_PREFIX}"
    if address not in _ip("-o", "addr", "show", "dev", layout.BRIDGE).stdout:
        _ip("addr", "add", address, "dev", layout.BRIDGE)
    _ip("link", "set", layout.BRIDGE, "up")
    # Service addresses are routed to the bridge, never to the default route:
    # a Service IP that kube-proxy has not (or no longer) rewritten then goes
    # nowhere instead of leaving the machine.
    _ip("route", "replace", layout.SERVICE_CIDR, "dev", layout.BRIDGE)
    for cidr in layout.GUARD_ROUTES:
        _ip("route", "replace", "prohibit", cidr, "metric", str(layout.GUARD_METRIC))
    chain = layout.ISOLATE_CHAIN
    if _iptables("-n", "-L", chain, check=False).returncode != 0:
        _iptables("-N", chain)
    rule = ["-i", layout.BRIDGE, "!", "-o", layout.BRIDGE, "-j", "DROP"]
    if _iptables("-C", chain, *rule, check=False).returncode != 0:
        _iptables("-A", chain, *rule)
    if _iptables("-C", "FORWARD", "-j", chain, check=False).returncode != 0:
        _iptables("-I", "FORWARD", "1", "-j", chain)


def down() -> None:
    """Delete the bridge (and any veth still on it); the chains go with host.restore_iptables."""
    output = _ip("-o", "link", "show", "master", layout.BRIDGE, check=False).stdout
    for line in output.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        _ip("link", "delete", name, check=False)
    if bridge_exists():
        _ip("link", "delete", layout.BRIDGE, check=False)


def remove_guard_routes() -> None:
    """The last step of ``down``: the node's ranges belong to the host's routing again."""
    for cidr in layout.GUARD_ROUTES:
        _ip("route", "del", "prohibit", cidr, "metric", str(layout.GUARD_METRIC), check=False)


def carries_node_address() -> bool:
    """Whether the bridge holds the node address, so that traffic to it stays here."""
    shown = _ip("-o", "addr", "show", "dev", layout.BRIDGE, check=False)
    return shown.returncode == 0 and f" {layout.NODE_IP}/" in shown.stdout


def write_cni_config(directory: Path) -> Path:
    """The CNI network that containerd's CRI plugin gives every pod."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "cniVersion": "1.0.0",
        "name": "agg-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                # a pod that reaches itself through its own Service
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.POD_SUBNET, "gateway": layout.NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.NODE_RUN / "cni" / "networks"),
                },
            }
        ],
    }
    target = directory / "10-agg-node.conflist"
    target.write_text(json.dumps(config, indent=2) + "\n")
    return target
