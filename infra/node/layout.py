"""Where the local node lives: its addresses, ports and machine-wide folders.

The node is one machine-wide thing: a bridge, iptables chains, cgroups, mounts.
So its runtime folders are fixed paths, not the checkout's ``.infra/``: any
clone's ``infra down`` (CI runs in a fresh clone) finds and removes what an
earlier one left.  Logs and pid files stay in the checkout's state dir like the
other servers'.

Addresses (docs/infrastructure.md, "The local node"):

- ``aggbr0``, a Linux bridge that the infra creates, holds the node address
  10.244.0.1/24; pods get 10.244.0.2-254 from it (CNI bridge + host-local).
- Services: 10.96.0.0/16; the ``kubernetes`` Service is 10.96.0.1, CoreDNS 10.96.0.10.
- The API server listens on the node address only (port 26443), so both the
  host and the pods reach it; kubelet serves on the node address too.
- Nothing is routed off the machine: the ``AGG-NODE-ISOLATE`` chain drops every
  packet from the bridge to another interface, and no masquerade rule exists.
"""

from __future__ import annotations

from pathlib import Path

from infra.paths import cache_dir, state_dir

NODE_NAME = "agg-node"
BRIDGE = "aggbr0"
NODE_IP = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
POD_PREFIX = 24
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"

ETCD_CLIENT_PORT = 22379
ETCD_PEER_PORT = 22380
APISERVER_PORT = 26443
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
PROXY_METRICS_PORT = 10249
SCHEDULER_PORT = 10259
CONTROLLER_MANAGER_PORT = 10257

SERVER_URL = f"https://{NODE_IP}:{APISERVER_PORT}"
ETCD_URL = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"

#: Machine-wide, removed by ``down``: certificates, generated configs, the
#: kubeconfig, etcd's data, kubelet's root, and the record of the host settings
#: that ``down`` restores.  Every node process names this folder in its
#: arguments, which is how ``down`` finds one that another checkout started.
NODE_ROOT = Path("/var/lib/stream-aggregator-node")
#: Volatile, machine-wide: sockets and runtime state.
NODE_RUN = Path("/run/stream-aggregator-node")
HOST_RECORD = NODE_ROOT / "host-record.json"
PKI_DIR = NODE_ROOT / "pki"
CONFIG_DIR = NODE_ROOT / "etc"
KUBELET_ROOT = NODE_ROOT / "kubelet"

CONTAINERD_SOCKET = NODE_RUN / "containerd" / "containerd.sock"
BUILDKIT_SOCKET = NODE_RUN / "buildkit" / "buildkitd.sock"
#: The containerd namespace the CRI plugin (and so kubelet) uses.
K8S_NAMESPACE = "k8s.io"
#: The cgroup (under every v1 controller) that kubelet puts pods in.
KUBEPODS_CGROUP = "kubepods"
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Machine-wide paths kubelet and containerd write outside their own folders;
#: ``down`` removes each one that did not exist before the first ``up``.
HOST_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/pods"),
    Path("/var/log/containers"),
    Path("/run/containerd"),
    Path("/run/netns"),
    Path("/var/lib/cni"),
    Path("/run/buildkit"),
    Path("/run/xtables.lock"),
)
#: The sysctls the node changes (kubelet: the first three; the CNI bridge plugin
#: and kube-proxy: the rest); their old values are recorded before the first ``up``.
SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
)
#: Ranges the host must never send to its default route: while the node is up
#: the bridge's routes are more specific (pods) or cheaper (Services) than these
#: ``prohibit`` routes, so these catch only what the bridge no longer carries
#: (a probe still running while ``down`` deletes the bridge fails at once
#: instead of leaving the machine).  ``down`` removes them last.
GUARD_ROUTES = ("10.244.0.0/16", SERVICE_CIDR)
GUARD_METRIC = 4242
#: iptables chains of our own (the rest, KUBE-*, belong to kubelet and kube-proxy).
ISOLATE_CHAIN = "AGG-NODE-ISOLATE"


def node_state() -> Path:
    """Logs, pid files and generated configs of this checkout's node processes."""
    path = state_dir() / "node"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kubeconfig_path() -> Path:
    """The admin kubeconfig of the node's API server (printed by ``up``)."""
    return NODE_ROOT / "kubeconfig"


def image_store() -> Path:
    """containerd's root (images, snapshots): a cache, kept across ``down``/``up``."""
    return cache_dir() / "node" / "containerd-root"
