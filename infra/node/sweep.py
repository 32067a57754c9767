"""Remove whatever a node left running or mounted, whoever started it.

``down`` first stops the node in order (kubelet, the pods through the CRI,
the servers); this module then finds what is left by facts of the machine
rather than by pid files, so it also cleans up after a checkout that was
deleted, a session that ended mid-``up``, or a SIGKILLed infra:

- processes whose arguments name the node's folders (every node server and
  every containerd shim does), and every process in kubelet's pod cgroups;
- mounts below the node's folders and the image store (overlay roots, the
  pods' tmpfs and projected volumes, network namespaces);
- kubelet's cgroups, deepest first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from infra.node import host, layout
from infra.process import pid_alive


def node_processes(markers: Iterable[str] | None = None) -> list[int]:
    """Pids whose command line names one of the node's machine-wide folders."""
    wanted = [m.encode() for m in (markers or (str(layout.NODE_ROOT), str(layout.NODE_RUN)))]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(marker in cmdline for marker in wanted):
            found.append(int(entry.name))
    return found


def pod_cgroups() -> list[Path]:
    """kubelet's cgroup folders under every controller, deepest first."""
    found: list[Path] = []
    for controller in host.CGROUP_CONTROLLERS:
        root = layout.CGROUP_ROOT / controller / layout.KUBEPODS_CGROUP
        if root.is_dir():
            found += [Path(dirpath) for dirpath, _, _ in os.walk(root)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def pod_processes() -> list[int]:
    pids: set[int] = set()
    for cgroup in pod_cgroups():
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(line) for line in (cgroup / "cgroup.procs").read_text().split())
    return sorted(pids)


def kill_all(pids: Iterable[int], *, grace_s: float) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL whatever still runs."""
    pending = [pid for pid in pids if pid_alive(pid)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [pid for pid in pending if pid_alive(pid)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [pid for pid in pending if pid_alive(pid)]


def mounts_below(roots: Iterable[Path]) -> list[str]:
    """Mount points at or below ``roots``, deepest first."""
    prefixes = [str(root).rstrip("/") for root in roots]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda point: point.count("/"), reverse=True)


def unmount_all(roots: Iterable[Path]) -> None:
    roots = list(roots)
    for _ in range(3):  # a mount may hide another one below it
        points = mounts_below(roots)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_cgroups() -> None:
    for _ in range(20):
        remaining = pod_cgroups()
        if not remaining:
            return
        for cgroup in remaining:
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        time.sleep(0.1)


def new_cgroups(before: dict[str, list[str]]) -> None:
    """Remove top-level cgroups that appeared while the node ran (buildkit's, say), if empty."""
    for controller, names in host._top_cgroups().items():
        for name in names:
            if name in before.get(controller, []) or name == layout.KUBEPODS_CGROUP:
                continue
            root = layout.CGROUP_ROOT / controller / name
            for dirpath, _, _ in sorted(
                os.walk(root), key=lambda w: len(Path(w[0]).parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    Path(dirpath).rmdir()


def netns_dirs() -> list[Path]:
    """The network namespaces that containerd made for pods (``cni-<uuid>``)."""
    found = []
    for directory in (Path("/run/netns"), Path("/var/run/netns")):
        if directory.is_dir():
            found += [entry for entry in directory.iterdir() if entry.name.startswith("cni-")]
    return found
