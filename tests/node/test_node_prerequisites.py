"""A missing prerequisite of the node is one clear line that names it, before anything changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.node import host, layout
from infra.paths import REPO_ROOT
from infra.process import InfraError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the node's checks run as root")


def _up_with(patch: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "import infra.node.host as host\n"
        f"{patch}\n"
        "from infra.__main__ import main\n"
        "sys.exit(main(['up', 'node']))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_missing_iptables_is_named_in_one_line_and_nothing_is_touched() -> None:
    record_existed = layout.HOST_RECORD.exists()
    result = _up_with("host.DEBIAN_PACKAGES['iptables'] = '/nonexistent/sbin/iptables'")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "infra: /nonexistent/sbin/iptables is missing (Debian package iptables); "
        "run: python -m infra install node"
    ]
    assert layout.HOST_RECORD.exists() == record_existed


def test_a_cgroup_hierarchy_that_is_not_mounted_is_named(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    for controller in host.CGROUP_CONTROLLERS:
        if controller != "memory":
            (tmp_path / controller).mkdir()
            (tmp_path / controller / "cgroup.procs").write_text("")
    with pytest.raises(
        InfraError, match=r"^the cgroup v1 hierarchy .*/memory \(memory\) is not mounted$"
    ):
        host.check(cgroup_root=tmp_path)


@pytest.fixture
def read_only_cgroup(tmp_path: Path) -> Iterator[Path]:
    for controller in host.CGROUP_CONTROLLERS:
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    pids = tmp_path / "pids"
    subprocess.run(["mount", "--bind", str(pids), str(pids)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(pids)], check=True)
        yield tmp_path
    finally:
        subprocess.run(["umount", str(pids)], check=True)


def test_a_cgroup_hierarchy_that_is_not_writable_is_named(read_only_cgroup: Path) -> None:
    with pytest.raises(
        InfraError, match=r"^the cgroup hierarchy .*/pids is not writable: Read-only file system$"
    ):
        host.check(cgroup_root=read_only_cgroup)
