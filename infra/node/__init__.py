"""A real Kubernetes node on this machine: containerd, the control plane, kubelet.

``python -m infra install node`` builds or fetches every part once per machine
(cached by version); ``up`` starts the node and loads the project's image,
built from the Dockerfile by BuildKit; ``down`` stops it and puts the host back
as it found it.  docs/infrastructure.md, "The local node", has the design, the
addresses, the measured times and the disk used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

from infra.kube import build as kube_build
from infra.kube import etcd
from infra.node import addons, buildkit, gobuild, host, images, layout, network, pki, servers, sweep
from infra.process import InfraError

NETNS_RECORD = layout.NODE_ROOT / "network-namespace"
"""The inode of the network namespace the node was brought up in."""

#: Images loaded into the node's containerd by ``up`` (the project's is built there too).
NODE_IMAGES = (images.PAUSE, images.COREDNS, images.METRICS_SERVER, images.HAZELCAST)


def _say(message: str) -> None:
    print(f"node: {message}", file=sys.stderr, flush=True)


def _network_namespace() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def _in_the_nodes_network_namespace() -> bool:
    """The node's bridge, routes and pods live in the network namespace ``up`` ran
    in (the host's).  From any other (``ip netns exec``), ``down`` would stop the
    node's processes yet leave its network behind; so it leaves the node alone."""
    try:
        recorded = int(NETNS_RECORD.read_text())
    except (OSError, ValueError):
        return True  # no node brought up, or an older one: nothing to tell apart
    return recorded == _network_namespace()


class NodeComponent:
    def install(self) -> None:
        from infra.components import component

        started = time.monotonic()
        host.install_packages()
        kube_build.ensure_built()
        etcd.install()
        for program in gobuild.PROGRAMS:
            gobuild.ensure_built(program)
        component("hazelcast").install()  # the member image carries its jars
        for image in images.ALL:
            images.ensure_built(image)
        cache = gobuild.CONTAINERD.root.parent.parent
        _say(f"installed in {time.monotonic() - started:.1f} s (cache: {cache})")

    def up(self) -> None:
        started = time.monotonic()
        if not _in_the_nodes_network_namespace():
            raise InfraError(
                "the node runs in another network namespace than this process "
                "(ip netns exec?): run `python -m infra up node` from where it runs"
            )
        host.check()
        self.require_installed()
        host.record()
        NETNS_RECORD.parent.mkdir(parents=True, exist_ok=True)
        NETNS_RECORD.write_text(str(_network_namespace()))
        network.up()
        keys = pki.ensure()
        servers.write_admin_kubeconfig(keys)
        seconds = {"containerd": servers.start_containerd()}
        loaded = time.monotonic()
        for image in NODE_IMAGES:
            images.import_layout(servers.ctr(), image.layout)
        seconds["images"] = time.monotonic() - loaded
        seconds["etcd"] = servers.start_etcd()
        seconds["kube-apiserver"] = servers.start_apiserver(keys)
        seconds["controller-manager"] = servers.start_controller_manager(keys)
        seconds["scheduler"] = servers.start_scheduler(keys)
        seconds["kubelet"] = servers.start_kubelet(keys, addons.kubectl)
        seconds["kube-proxy"] = servers.start_kube_proxy(keys)
        seconds["buildkitd"] = servers.start_buildkitd()
        seconds["add-ons"] = addons.apply()
        seconds["project image"] = buildkit.build_project_image()
        timings = ", ".join(
            f"{name} {value:.1f} s" for name, value in seconds.items() if value >= 0.05
        )
        _say(
            f"{layout.NODE_NAME} Ready at {layout.SERVER_URL} "
            f"in {time.monotonic() - started:.1f} s "
            f"({timings or 'already running'}); kubeconfig {layout.kubeconfig_path()}"
        )

    def require_installed(self) -> None:
        missing = [p.name for p in gobuild.PROGRAMS if not p.present()]
        missing += [i.name for i in images.ALL if not (i.layout / ".recipe").is_file()]
        if not kube_build.binaries().present():
            missing.append("kubernetes binaries")
        if missing:
            raise InfraError(
                f"the node is not installed ({', '.join(missing)}); "
                "run: python -m infra install node"
            )

    def down(self) -> None:
        started = time.monotonic()
        if not _in_the_nodes_network_namespace():
            _say(
                "left alone: it runs in another network namespace than this process "
                "(ip netns exec?); `python -m infra down node` from there stops it"
            )
            return
        record = host.recorded()
        # kubelet first, so that it restarts nothing; then every pod through the
        # CRI (containerd stops the containers and tears down their networks)
        servers.KUBELET.stop()
        if servers.CONTAINERD.running() and gobuild.CRICTL.present():
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [*servers.crictl(), "rmp", "--all", "--force"],
                    capture_output=True,
                    timeout=90,
                    check=False,
                )
        for process in reversed(servers.ALL):
            process.stop(timeout_s=15)
        # whatever is left, whoever started it
        sweep.kill_all(sweep.node_processes(), grace_s=5)
        sweep.kill_all(sweep.pod_processes(), grace_s=2)
        sweep.unmount_all(
            [
                layout.NODE_ROOT,
                layout.NODE_RUN,
                layout.image_store(),
                servers.buildkit_store(),
                *sweep.netns_dirs(),
            ]
        )
        sweep.remove_cgroups()
        network.down()
        if record is not None:
            sweep.new_cgroups(record["cgroups"])
            host.restore_iptables(record["chains"])
            host.restore_nft_tables(record["nft_tables"])
            host.restore_sysctls(record["sysctls"])
            host.restore_paths(record["paths"])
        shutil.rmtree(layout.NODE_RUN, ignore_errors=True)
        shutil.rmtree(layout.NODE_ROOT, ignore_errors=True)
        network.remove_guard_routes()
        _say(
            f"down in {time.monotonic() - started:.1f} s"
            + ("" if record else " (no host record: nothing to restore)")
        )

    def status(self) -> None:
        for process in servers.ALL:
            pid = process.pid()
            state = f"running (pid {pid})" if pid else "stopped"
            print(f"node: {process.name}: {state}; log {process.log_file}")
        for program in gobuild.PROGRAMS:
            where = program.bin_dir if program.present() else "not built"
            print(f"node: {program.name} {program.version}: {where}")
        bridge = "present" if network.bridge_exists() else "absent"
        print(f"node: bridge {layout.BRIDGE}: {bridge}; kubeconfig {layout.kubeconfig_path()}")


COMPONENT = NodeComponent()
