"""What the Docker image runs, without Docker (there is no engine here): the
wheel, installed the way the Dockerfile's runtime stage installs it (a venv
without pip, filled by another pip as root), then run as the image's numeric
non-root user (10001) from a directory it cannot write, with only a scratch
directory writable (the pod's /tmp emptyDir). ``aggregator run --help``
answers, and ``aggregator demo`` serves the dashboard, every file it loads, and
the API.

Dependencies come from PyPI, so this takes a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.pods import free_port

REPO = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001  # the Dockerfile's USER
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def run(*command: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def checked(*command: str, timeout_s: float = 300.0) -> str:
    done = run(*command, timeout_s=timeout_s)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class User:
    """Who runs the installed command. As root: uid/gid 10001, the image's
    numeric user, set in the child just before exec (no wrapper such as runuser
    stays in between, so signals and the exit status are the aggregator's own,
    as for PID 1 in the container). As anyone else: the current user, who is
    not root already."""

    uid: int | None
    gid: int | None

    @property
    def extra_groups(self) -> list[int] | None:
        return None if self.uid is None else []

    @property
    def name(self) -> str:
        return f"uid {os.geteuid() if self.uid is None else self.uid}"


def unprivileged() -> User:
    return User(IMAGE_UID, IMAGE_UID) if os.geteuid() == 0 else User(None, None)


def run_as(
    user: User, *command: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=env, user=user.uid, group=user.gid, extra_groups=user.extra_groups,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def python_311_for(user: User, cwd: Path) -> str:
    """A CPython 3.11 (the image's) that the unprivileged user can execute: the
    test venv's own may live under a home directory nobody else can enter."""
    candidates = [
        "/usr/bin/python3.11",
        "/usr/local/bin/python3.11",
        shutil.which("python3.11") or "",
        getattr(sys, "_base_executable", sys.executable),
    ]
    check = "import sys, venv; assert sys.version_info[:2] == (3, 11)"
    for candidate in candidates:
        usable = candidate and Path(candidate).exists()
        if usable and run_as(user, candidate, "-c", check, cwd=cwd).returncode == 0:
            return candidate
    pytest.skip(f"no Python 3.11 that {user.name} can run (tried {candidates})")


@pytest.fixture
def install_root() -> Iterator[Path]:
    """Outside pytest's tmp_path, which only its owner may enter."""
    root = Path(tempfile.mkdtemp(prefix="agg-wheel-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_wheel(into: Path) -> Path:
    checked(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(into), str(REPO))
    [wheel] = into.glob("stream_aggregator-*.whl")
    return wheel


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def referenced_assets(index_html: str, modules: dict[str, str]) -> set[str]:
    """What the page loads: static/ files in index.html, and every ES module
    import between them (the same check as the Dockerfile's dashboard stage)."""
    found = set(re.findall(r'(?:src|href)="(static/[^"]+)"', index_html))
    for text in modules.values():
        found |= {f"static/{name}" for name in re.findall(r'from\s+"\./([^"]+)"', text)}
    return found


def dockerfile_dashboard_check() -> str:
    """The Python program the Dockerfile's dashboard stage runs (its heredoc)."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r"(?ms)^RUN python <<'CHECK'\n(.*?)^CHECK$", dockerfile)
    assert found, "the dashboard stage's check is not where this test looks for it"
    return found.group(1)


def test_the_dockerfiles_dashboard_stage_accepts_the_dashboard_and_rejects_a_broken_one(
    tmp_path: Path,
) -> None:
    check = dockerfile_dashboard_check()
    dashboard = tmp_path / "dashboard"
    shutil.copytree(REPO / "dashboard", dashboard)
    passed = subprocess.run(
        [sys.executable, "-c", check], cwd=dashboard, capture_output=True, text=True, check=False
    )
    assert passed.returncode == 0, passed.stderr
    # A module that another one imports goes missing: the build would stop.
    imported = sorted(referenced_assets("", {"app.js": (dashboard / "app.js").read_text()}))
    (dashboard / imported[0].removeprefix("static/")).unlink()
    failed = subprocess.run(
        [sys.executable, "-c", check], cwd=dashboard, capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0
    assert f"app.js -> {imported[0].removeprefix('static/')}" in failed.stderr


@pytest.mark.slow
def test_the_wheel_runs_as_a_non_root_user_from_a_read_only_directory(
    install_root: Path, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    wheel = build_wheel(tmp_path / "dist")
    timings["build wheel"] = time.monotonic() - started

    # The wheel carries the dashboard (pyproject force-include) and the command.
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "aggregator = aggregator.wiring.cli:main" in archive.read(entry_points).decode()
    dashboard = {p.name for p in (REPO / "dashboard").iterdir() if p.is_file()}
    shipped = {n.removeprefix("aggregator/_dashboard/") for n in names if "/_dashboard/" in n}
    assert dashboard <= shipped, dashboard - shipped
    # ... and the C extension, compiled by hatch_build.py (the wheel is tagged for it).
    assert f"aggregator/core/_native{sysconfig.get_config_var('EXT_SUFFIX')}" in names
    assert "-cp311-cp311-linux_" in wheel.name, wheel.name

    user = unprivileged()
    python = python_311_for(user, install_root)

    # As the Dockerfile: a venv without pip, installed into by another pip, as root.
    venv = install_root / "venv"
    started = time.monotonic()
    checked(python, "-m", "venv", "--without-pip", str(venv))
    checked(
        sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
        "--no-cache-dir", "--disable-pip-version-check", "-q", str(wheel),
    )  # fmt: skip
    timings["install with dependencies"] = time.monotonic() - started
    assert not (venv / "bin" / "pip").exists()
    aggregator = str(venv / "bin" / "aggregator")

    workdir = install_root / "work"  # the image's WORKDIR: not writable by the user
    workdir.mkdir()
    scratch = install_root / "tmp"  # the pod's /tmp emptyDir
    scratch.mkdir()
    scratch.chmod(0o1777)
    if os.geteuid() != 0:  # not root: take the write permission away instead
        for path in [venv, *venv.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~0o222)
    workdir.chmod(0o555)
    for target in (workdir / "probe", venv / "lib" / "probe"):
        refused = run_as(user, "sh", "-c", f"echo x > {target}", cwd=workdir)
        assert refused.returncode != 0, f"{user.name} could write {target}"
    before = files_under(venv)

    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }

    helped = run_as(user, aggregator, "run", "--help", cwd=workdir, env=env)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: aggregator run"), helped.stdout
    compiled = run_as(
        user, str(venv / "bin" / "python"), "-c",
        "from aggregator.core import native; print(native.NATIVE.__name__)",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert compiled.stdout.strip() == "aggregator.core._native", compiled.stderr

    port = free_port()
    log = tmp_path / "demo.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        demo = subprocess.Popen(
            [aggregator, "demo", "--host", HOST, "--port", str(port), "--pods", "2"],
            cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT,
            user=user.uid, group=user.gid, extra_groups=user.extra_groups,
        )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=5.0) as api:
            page = None
            while page is None:
                assert demo.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() - started < START_TIMEOUT_S, log.read_text()
                try:
                    page = api.get("/")
                except httpx.TransportError:
                    time.sleep(0.2)
            timings["demo serves /"] = time.monotonic() - started
            status_file = Path(f"/proc/{demo.pid}/status")
            if status_file.exists():  # Linux: the server itself runs unprivileged
                uids = next(
                    line.split()[1:] for line in status_file.read_text().splitlines()
                    if line.startswith("Uid:")
                )  # fmt: skip
                assert set(uids) == {str(os.geteuid() if user.uid is None else user.uid)}
                assert "0" not in uids
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "<title>stream-aggregator</title>" in page.text

            modules = {
                name: api.get(f"/static/{name}").text
                for name in sorted(dashboard)
                if name.endswith(".js")
            }
            for asset in sorted(referenced_assets(page.text, modules)):
                assert api.get(f"/{asset}").status_code == 200, asset

            assert api.get("/healthz").status_code == 200
            stats = api.get("/api/stats")
            while stats.status_code == 503:  # no snapshot yet: the first tick is coming
                assert time.monotonic() - started < START_TIMEOUT_S, stats.text
                time.sleep(0.2)
                stats = api.get("/api/stats")
            assert stats.status_code == 200
            snapshot = stats.json()
            assert {"total", "by", "series", "rejected"} <= set(snapshot), sorted(snapshot)
            timings["demo answers /api/stats"] = time.monotonic() - started

        # A graceful stop. uvicorn re-raises the SIGTERM it handled once it has
        # shut down, so the demo may end "by" that signal after a clean shutdown.
        demo.send_signal(signal.SIGTERM)
        status = demo.wait(timeout=STOP_TIMEOUT_S)
        output = log.read_text(errors="replace")
        assert status in {0, -signal.SIGTERM}, output
        assert "Application shutdown complete" in output, output
        assert "Traceback" not in output, output
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=10)

    # Nothing was written next to the code, and nothing into the working directory.
    assert files_under(venv) == before
    assert not any(workdir.iterdir())
    print(", ".join(f"{what} {seconds:.1f} s" for what, seconds in timings.items()))
