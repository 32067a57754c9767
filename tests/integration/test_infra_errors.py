"""A broken environment gives one clear error line, fast: no Java, a port taken, a dead start.

These run ``python -m infra`` (or the component API) against a private state
directory, so they never touch the servers other tests use, and they need no
installed server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import hazelcast as hz_infra
from infra.maven import MAVEN_DIR
from infra.paths import REPO_ROOT
from infra.process import InfraError, pid_alive, port_open

# No path here takes longer than a JVM version check; a hang would hit this.
LIMIT_S = 30


def _infra(action: str, component: str, env: dict[str, str]) -> tuple[int, list[str], float]:
    """Run ``python -m infra <action> <component>``: exit code, stderr lines, seconds."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "infra", action, component],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=LIMIT_S, check=False,
    )  # fmt: skip
    return result.returncode, result.stderr.strip().splitlines(), time.monotonic() - started


@pytest.fixture
def private_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment with its own state and cache directories."""
    env = dict(os.environ)
    env["AGG_INFRA_STATE"] = str(tmp_path / "state")
    env["AGG_INFRA_CACHE"] = str(tmp_path / "cache")
    return env


@pytest.mark.parametrize(
    ("action", "component"),
    [("up", "kafka"), ("up", "hazelcast"), ("install", "kafka"), ("install", "hazelcast")],
)
def test_no_java_on_path_is_one_clear_line(
    private_env: dict[str, str], tmp_path: Path, action: str, component: str
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    private_env["PATH"] = str(empty)
    private_env.pop("JAVA_HOME", None)

    code, lines, seconds = _infra(action, component, private_env)

    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("infra: Java not found (no JAVA_HOME, no java on PATH)")
    assert "JDK 17" in lines[0]
    assert seconds < LIMIT_S
    assert not (tmp_path / "cache" / "maven-repository").exists(), "it started downloading"


@pytest.mark.parametrize("component", ["kafka", "hazelcast"])
def test_java_home_pointing_nowhere_is_one_clear_line(
    private_env: dict[str, str], tmp_path: Path, component: str
) -> None:
    private_env["JAVA_HOME"] = str(tmp_path / "no-such-jdk")

    code, lines, _ = _infra("up", component, private_env)

    assert code == 1
    assert lines == [
        f"infra: JAVA_HOME={tmp_path / 'no-such-jdk'} has no executable bin/java; "
        "point JAVA_HOME at a JDK 17+ or unset it"
    ]


@contextlib.contextmanager
def _port_taken(port: int) -> Iterator[None]:
    """Make sure something listens on ``port`` (another process may already)."""
    if port_open("127.0.0.1", port):
        yield
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


@pytest.mark.parametrize(
    ("component", "port", "owner"),
    [("kafka", 19092, "the Kafka broker"), ("hazelcast", 15701, "Hazelcast member 1")],
)
def test_a_taken_port_is_one_clear_line(
    private_env: dict[str, str], component: str, port: int, owner: str
) -> None:
    with _port_taken(port):
        code, lines, seconds = _infra("up", component, private_env)

    assert code == 1
    assert lines == [
        f"infra: port 127.0.0.1:{port} needed by {owner} is already taken by another "
        f"process (find it with: ss -ltnp 'sport = :{port}')"
    ]
    assert seconds < LIMIT_S


# --- a JVM that starts but never answers, or dies at once -----------------------

FAKE_JAVA = """#!/bin/sh
if [ "$1" = "-version" ]; then
    echo 'openjdk version "17.0.99" 2030-01-01' >&2
    exit 0
fi
echo "fake java started: $*"
{body}
"""


@pytest.fixture
def fake_java(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    """A ``java`` that reports 17 and then runs the test's body; a fake installed jar set."""
    home = tmp_path / "fake-jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(FAKE_JAVA.format(body=request.param))
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(home))
    monkeypatch.setenv("AGG_INFRA_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("AGG_INFRA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AGG_INFRA_START_TIMEOUT", "3")
    # "installed": the stamp that marks a complete copy holds the POM's hash
    lib = hz_infra.JARS.lib
    lib.mkdir(parents=True)
    pom = MAVEN_DIR / "hazelcast" / "pom.xml"
    (lib / ".complete").write_text(hashlib.sha256(pom.read_bytes()).hexdigest() + "\n")
    return java


# The third member's port (15703) is free unless a failure test runs one.
THIRD = 2


@pytest.mark.parametrize("fake_java", ["sleep 300"], indirect=True)
def test_a_server_that_never_answers_fails_after_the_time_limit_naming_its_log(
    fake_java: Path,
) -> None:
    assert hz_infra.COMPONENT.installed()
    log = hz_infra.member_process(THIRD).log_file
    started = time.monotonic()

    with pytest.raises(InfraError) as raised:
        hz_infra.COMPONENT.start_member(THIRD)

    assert 3 <= time.monotonic() - started < LIMIT_S
    first_line = str(raised.value).splitlines()[0]
    assert first_line == f"Hazelcast member 127.0.0.1:15703 did not answer within 3 s; see {log}:"
    assert "fake java started:" in str(raised.value)  # the log's tail is quoted
    # and the process it started is gone, not left hanging
    assert hz_infra.member_process(THIRD).pid() is None
    assert not _processes_running(str(fake_java))


@pytest.mark.parametrize("fake_java", ["echo 'Error: no way' >&2; exit 3"], indirect=True)
def test_a_server_that_dies_at_start_fails_at_once_naming_its_log(fake_java: Path) -> None:
    log = hz_infra.member_process(THIRD).log_file
    started = time.monotonic()

    with pytest.raises(InfraError) as raised:
        hz_infra.COMPONENT.start_member(THIRD)

    assert time.monotonic() - started < 3  # did not wait for the time limit
    assert str(raised.value).splitlines()[0] == (
        f"Hazelcast member 127.0.0.1:15703 exited during start-up; see {log}:"
    )
    assert "Error: no way" in str(raised.value)


def _processes_running(needle: str) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not pid_alive(int(proc.name)):
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (proc / "cmdline").read_bytes():
                return True
    return False
