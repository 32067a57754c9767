"""What the node needs from the host, what it changes there, and how ``down`` undoes it.

- :func:`check` names the first missing prerequisite in one line.
- :func:`record` writes, before the first ``up``, the host settings the node
  changes (sysctls, which machine-wide folders, iptables chains, nftables tables
  and top-level cgroups exist); :func:`restore` puts them back and deletes the
  record.  A record left by an ``up`` that was never taken down is kept, so the
  values first seen are the ones restored.
- :func:`snapshot` is the comparable picture of all that (tests check that
  ``down`` returns it unchanged).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TypedDict

from infra.node import layout
from infra.process import InfraError

DEBIAN_PACKAGES = {
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "iptables": "/usr/sbin/iptables",
    "nftables": "/usr/sbin/nft",
    "conntrack": "/usr/sbin/conntrack",
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "iproute2": "/usr/sbin/ip",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer")
TABLES = ("filter", "nat", "mangle", "raw")


# --- prerequisites -----------------------------------------------------------


def install_packages() -> None:
    """apt-get the Debian packages the node uses, if any is missing."""
    missing = [name for name, path in DEBIAN_PACKAGES.items() if not os.access(path, os.X_OK)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(f"missing Debian packages {', '.join(missing)}; run as root with apt-get")
    env = dict(os.environ) | {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise InfraError(f"{' '.join(argv[:2])} failed: {' / '.join(tail)}")


def check(*, cgroup_root: Path = layout.CGROUP_ROOT, proc: Path = Path("/proc")) -> None:
    """Raise one line naming the first missing prerequisite of the node."""
    if os.geteuid() != 0:
        raise InfraError("the local node needs root (it runs containerd, kubelet and iptables)")
    for package, path in DEBIAN_PACKAGES.items():
        if not os.access(path, os.X_OK):
            raise InfraError(
                f"{path} is missing (Debian package {package}); run: python -m infra install node"
            )
    for plugin in ("bridge", "host-local", "loopback"):
        if not os.access(CNI_BIN_DIR / plugin, os.X_OK):
            raise InfraError(
                f"the CNI plugin {CNI_BIN_DIR / plugin} is missing "
                "(Debian: containernetworking-plugins)"
            )
    filesystems = (proc / "filesystems").read_text() if (proc / "filesystems").exists() else ""
    if "overlay" not in filesystems:
        raise InfraError("the kernel has no overlay filesystem (containerd's snapshotter needs it)")
    for controller in CGROUP_CONTROLLERS:
        _check_cgroup(cgroup_root / controller, controller)
    if not (proc / "sys/net/bridge/bridge-nf-call-iptables").exists():
        raise InfraError(
            "bridge netfilter is off: /proc/sys/net/bridge/bridge-nf-call-iptables is missing"
        )


def _check_cgroup(directory: Path, controller: str) -> None:
    if not (directory / "cgroup.procs").exists():
        raise InfraError(f"the cgroup v1 hierarchy {directory} ({controller}) is not mounted")
    probe = directory / "stream-aggregator-probe"
    try:
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as error:
        raise InfraError(
            f"the cgroup hierarchy {directory} is not writable: {error.strerror}"
        ) from error


# --- the picture of what the node touches -------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _chains(binary: str) -> dict[str, list[str]]:
    """``table -> chain names`` as iptables-save prints them (empty if the binary is absent)."""
    save = shutil.which(f"{binary}-save")
    if save is None:
        return {}
    output = subprocess.run([save], capture_output=True, text=True, check=False).stdout
    chains: dict[str, list[str]] = {}
    table = ""
    for line in output.splitlines():
        if line.startswith("*"):
            table = line[1:]
            chains[table] = []
        elif line.startswith(":"):
            chains[table].append(line[1:].split()[0])
    return chains


def _rules(binary: str) -> list[str]:
    """Every rule, without counters (the comparable part of iptables-save)."""
    save = shutil.which(f"{binary}-save")
    if save is None:
        return []
    output = subprocess.run([save], capture_output=True, text=True, check=False).stdout
    return [
        re.sub(r"\[\d+:\d+\]", "", line).strip()
        for line in output.splitlines()
        if line and not line.startswith("#")
    ]


def _nft_tables() -> list[str]:
    nft = shutil.which("nft")
    if nft is None:
        return []
    output = subprocess.run(
        [nft, "list", "tables"], capture_output=True, text=True, check=False
    ).stdout
    return sorted(line.strip() for line in output.splitlines() if line.startswith("table "))


def _top_cgroups() -> dict[str, list[str]]:
    found = {}
    for controller in CGROUP_CONTROLLERS:
        root = layout.CGROUP_ROOT / controller
        with contextlib.suppress(OSError):
            found[controller] = sorted(p.name for p in root.iterdir() if p.is_dir())
    return found


def _mounts() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _links() -> list[str]:
    output = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in output.splitlines())


def _routes() -> list[str]:
    output = subprocess.run(
        ["ip", "-o", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout
    return sorted(line.strip() for line in output.splitlines() if line.strip())


def snapshot() -> dict[str, object]:
    """What the node may change on the host, in a form two calls can be compared in."""
    netns = Path("/var/run/netns")
    return {
        "sysctls": {name: _read_sysctl(name) for name in layout.SYSCTLS},
        "paths": {
            str(path): path.exists()
            for path in (*layout.HOST_PATHS, layout.NODE_ROOT, layout.NODE_RUN)
        },
        "iptables": _rules("iptables"),
        "ip6tables": _rules("ip6tables"),
        "nft_tables": _nft_tables(),
        "cgroups": _top_cgroups(),
        "mounts": _mounts(),
        "links": _links(),
        "routes": _routes(),
        "netns": sorted(p.name for p in netns.iterdir()) if netns.is_dir() else [],
    }


# --- record and restore --------------------------------------------------------


class HostRecord(TypedDict):
    sysctls: dict[str, str | None]
    paths: dict[str, bool]
    chains: dict[str, dict[str, list[str]]]
    nft_tables: list[str]
    cgroups: dict[str, list[str]]


def record() -> None:
    """Write the host record unless one exists (an earlier ``up`` never taken down)."""
    if layout.HOST_RECORD.is_file():
        return
    state: HostRecord = {
        "sysctls": {name: _read_sysctl(name) for name in layout.SYSCTLS},
        "paths": {str(path): path.exists() for path in layout.HOST_PATHS},
        "chains": {binary: _chains(binary) for binary in ("iptables", "ip6tables")},
        "nft_tables": _nft_tables(),
        "cgroups": _top_cgroups(),
    }
    layout.HOST_RECORD.parent.mkdir(parents=True, exist_ok=True)
    partial = layout.HOST_RECORD.with_suffix(".partial")
    partial.write_text(json.dumps(state, indent=2) + "\n")
    partial.rename(layout.HOST_RECORD)


def recorded() -> HostRecord | None:
    try:
        loaded: HostRecord = json.loads(layout.HOST_RECORD.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def restore_iptables(chains_before: dict[str, dict[str, list[str]]]) -> None:
    """Delete every chain that was not there before, and each rule that jumps to one."""
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary) is None:
            continue
        before = chains_before.get(binary, {})
        for table, chains in _chains(binary).items():
            new = [chain for chain in chains if chain not in before.get(table, [])]
            if not new:
                continue
            _delete_jumps(binary, table, set(new))
            for flag in ("-F", "-X"):
                for chain in new:
                    subprocess.run(
                        [binary, "-w", "-t", table, flag, chain], capture_output=True, check=False
                    )


def _delete_jumps(binary: str, table: str, targets: set[str]) -> None:
    listing = subprocess.run(
        [binary, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "-A" or parts[1] in targets:
            continue
        jumps = {parts[i + 1] for i in range(len(parts) - 1) if parts[i] in ("-j", "-g")}
        if jumps & targets:
            subprocess.run(
                [binary, "-w", "-t", table, "-D", *parts[1:]], capture_output=True, check=False
            )


def restore_nft_tables(before: list[str]) -> None:
    """Delete the nftables tables that appeared (iptables-nft makes one per table it touches)."""
    nft = shutil.which("nft")
    if nft is None:
        return
    for table in _nft_tables():
        if table not in before:
            # "table ip nat" -> nft delete table ip nat
            subprocess.run(
                [nft, "delete", "table", *table.split()[1:]], capture_output=True, check=False
            )


def restore_sysctls(before: dict[str, str | None]) -> None:
    for name, value in before.items():
        if value is not None and _read_sysctl(name) not in (None, value):
            with contextlib.suppress(OSError):
                _sysctl_path(name).write_text(value)


def restore_paths(before: dict[str, bool]) -> None:
    for path, existed in before.items():
        if not existed:
            target = Path(path)
            if target.is_symlink() or target.is_file():
                target.unlink(missing_ok=True)
            else:
                shutil.rmtree(target, ignore_errors=True)
