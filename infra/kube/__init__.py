"""The local Kubernetes API server: kube-apiserver + kubectl built with Go, etcd.

``python -m infra install kube`` builds the binaries once per machine (cached by
version) and installs etcd; ``up``/``down``/``status`` manage the servers.  See
docs/infrastructure.md, section "Kubernetes API server".
"""

from __future__ import annotations

import sys
import time

from infra.kube import build, control_plane, etcd


class KubeComponent:
    def install(self) -> None:
        started = time.monotonic()
        binaries = build.ensure_built()
        etcd_binary = etcd.install()
        print(
            f"kube: kube-apiserver/kubectl {binaries.version} in {binaries.bin_dir}; "
            f"etcd v{etcd.version(etcd_binary)} ({etcd.source()}) at {etcd_binary} "
            f"[{time.monotonic() - started:.1f} s]",
            file=sys.stderr,
        )

    def up(self) -> None:
        started = control_plane.up()
        timings = ", ".join(
            f"{name} started in {seconds:.1f} s"
            for name, seconds in (
                ("etcd", started.etcd_seconds),
                ("kube-apiserver", started.apiserver_seconds),
            )
            if seconds is not None
        )
        print(
            f"kube: {control_plane.SERVER_URL} ready ({timings or 'already running'}); "
            f"kubeconfig {control_plane.kubeconfig_path()}",
            file=sys.stderr,
        )

    def down(self) -> None:
        control_plane.down()

    def status(self) -> None:
        for line in control_plane.status_lines():
            print(f"kube: {line}")


COMPONENT = KubeComponent()
