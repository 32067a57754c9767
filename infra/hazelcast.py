"""Hazelcast members on loopback, from the Maven Central member jar.

- Jar: ``infra/maven/hazelcast/pom.xml`` (the version lives there), copied into
  ``<cache>/hazelcast-<version>/lib`` by ``python -m infra install hazelcast``.
- Members: one JVM each on 127.0.0.1:15701, 15702 (15703 for a third member in
  later failure tests), cluster ``stream-aggregator``, TCP-IP join; settings in
  ``infra/config/hazelcast.yaml``, logs in ``<state>/hazelcast-<port>.log``.
- A member is ready when a Hazelcast client connected to it sees every member
  that runs, i.e. it has joined the cluster.  Members start one after another so
  they never form two clusters that would have to merge later.
- SIGTERM is a graceful shutdown (partitions migrate first); ``kill_member`` is
  SIGKILL, the failure a backup-count of 1 must survive.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from infra.maven import (
    JarSet,
    file_lock,
    java_process_alive,
    require_java,
    start_timeout_s,
    wait_ports_closed,
)
from infra.paths import REPO_ROOT, state_dir
from infra.process import InfraError, ServerProcess, port_open, require_free_port

HOST = "127.0.0.1"
PORTS = (15701, 15702, 15703)
MEMBER_COUNT = 2  # what `up` and the test fixture start; PORTS[2] is for later tests
CLUSTER_NAME = "stream-aggregator"

JARS = JarSet("hazelcast", "hazelcast.version")
CONFIG = REPO_ROOT / "infra" / "config" / "hazelcast.yaml"
MAIN_CLASS = "com.hazelcast.core.server.HazelcastMemberStarter"
# What Hazelcast asks for on Java 9+ to reach the JDK internals it uses.
JAVA_MODULE_FLAGS = [
    "--add-modules", "java.se",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.management/sun.management=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
]  # fmt: skip
JVM_OPTIONS = [
    "-Xms128m",
    "-Xmx256m",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
    # java.util.logging on one line per record
    "-Djava.util.logging.SimpleFormatter.format=[%1$tF %1$tT] %4$s %5$s (%3$s)%6$s%n",
    f"-Dhazelcast.config={CONFIG}",
]


def address(index: int) -> str:
    return f"{HOST}:{PORTS[index]}"


def member_process(index: int) -> ServerProcess:
    return ServerProcess(f"hazelcast-{PORTS[index]}")


def member_dir(index: int) -> Path:
    return state_dir() / "hazelcast" / str(PORTS[index])


def tests_own_marker() -> Path:
    """Present while the running members were started by a test session (which stops them)."""
    return state_dir() / "hazelcast.started-by-tests"


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """The probe's failed connection attempts are expected; keep them out of the output."""
    logger = logging.getLogger("hazelcast")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def members_seen_from(member: str, *, timeout_s: float = 5.0) -> set[str]:
    """The cluster's member addresses as a client connected only to ``member`` sees them."""
    from hazelcast.client import HazelcastClient

    with _quiet_client_logs():
        client = HazelcastClient(
            cluster_name=CLUSTER_NAME,
            cluster_members=[member],
            smart_routing=False,
            cluster_connect_timeout=timeout_s,
            connection_timeout=timeout_s,
            statistics_enabled=False,
        )
        try:
            return {
                f"{m.address.host}:{m.address.port}" for m in client.cluster_service.get_members()
            }
        finally:
            client.shutdown()


class HazelcastComponent:
    """install / up / down / status for ``python -m infra``, plus per-member control for tests."""

    name = "hazelcast"
    cluster_name = CLUSTER_NAME

    @property
    def version(self) -> str:
        return JARS.version

    def installed(self) -> bool:
        return JARS.installed()

    def install(self) -> None:
        started = time.monotonic()
        fetched = JARS.install()
        action = "downloaded" if fetched else "already in the cache"
        print(
            f"hazelcast: {JARS.version} member jar {action} at {JARS.lib} "
            f"[{time.monotonic() - started:.1f} s]",
            file=sys.stderr,
        )

    def member_running(self, index: int) -> bool:
        return java_process_alive(member_process(index), f"-Dagg.member.port={PORTS[index]}")

    def running_members(self) -> list[str]:
        return [address(i) for i in range(len(PORTS)) if self.member_running(i)]

    def _wait_joined(self, index: int) -> None:
        """Until a client on this member sees every running member (so it has joined)."""

        def joined() -> bool:
            if not port_open(HOST, PORTS[index]):
                return False
            return set(self.running_members()) <= members_seen_from(address(index))

        member_process(index).wait_ready(
            joined, timeout_s=start_timeout_s(), what=f"Hazelcast member {address(index)}"
        )

    def start_member(self, index: int, *, for_tests: bool = False) -> bool:
        """Start one member unless it runs, wait until it joined; True if this call started it."""
        server = member_process(index)
        with file_lock(state_dir() / "hazelcast.lock"):
            if not self.member_running(index):
                java = require_java()
                require_free_port(HOST, PORTS[index], f"Hazelcast member {index + 1}")
                JARS.require_installed()
                member_dir(index).mkdir(parents=True, exist_ok=True)
                server.start(
                    [
                        java, *JAVA_MODULE_FLAGS, *JVM_OPTIONS,
                        f"-Dagg.member.port={PORTS[index]}",
                        "-cp", JARS.classpath, MAIN_CLASS,
                    ],
                    cwd=member_dir(index),
                )  # fmt: skip
                started = True
            else:
                started = False
            try:
                self._wait_joined(index)
            except InfraError:
                if started:
                    server.stop(timeout_s=5)
                raise
            if started and for_tests:
                tests_own_marker().write_text("members started by a test session\n")
            return started

    def start(self, *, members: int = MEMBER_COUNT, for_tests: bool = False) -> bool:
        """Start the first ``members`` members, one after another; True if any was started."""
        started = [self.start_member(i, for_tests=for_tests) for i in range(members)]
        return any(started)

    def stop_member(self, index: int) -> bool:
        """Graceful shutdown (SIGTERM): the member hands its partitions over, then leaves."""
        stopped = self.member_running(index) and member_process(index).stop(timeout_s=30)
        if stopped:
            wait_ports_closed(HOST, [PORTS[index]])
        return stopped

    def kill_member(self, index: int) -> bool:
        """SIGKILL: the member vanishes; the others promote its backups."""
        killed = self.member_running(index) and member_process(index).kill()
        if killed:
            wait_ports_closed(HOST, [PORTS[index]])
        return killed

    def stop(self) -> None:
        for index in reversed(range(len(PORTS))):
            self.stop_member(index)

    def up(self) -> None:
        started = time.monotonic()
        did_start = self.start()
        # Started (or adopted) by a developer: no test session may stop them now.
        tests_own_marker().unlink(missing_ok=True)
        how = f"started in {time.monotonic() - started:.1f} s" if did_start else "already running"
        print(
            f"hazelcast: {JARS.version} cluster '{CLUSTER_NAME}' ready at "
            f"{', '.join(self.running_members())} ({how}; logs {state_dir()}/hazelcast-*.log)",
            file=sys.stderr,
        )

    def down(self) -> None:
        was_running = self.running_members()
        self.stop()
        shutil.rmtree(state_dir() / "hazelcast", ignore_errors=True)
        tests_own_marker().unlink(missing_ok=True)
        what = f"stopped {', '.join(was_running)}" if was_running else "was not running"
        print(f"hazelcast: {what}; data removed", file=sys.stderr)

    def status(self) -> None:
        for index in range(len(PORTS)):
            server = member_process(index)
            if self.member_running(index):
                print(
                    f"hazelcast: member {address(index)} running "
                    f"(pid {server.pid()}, log {server.log_file})"
                )
            elif index < MEMBER_COUNT:
                installed = "installed" if JARS.installed() else "not installed"
                print(f"hazelcast: member {address(index)} stopped ({JARS.version} {installed})")


COMPONENT = HazelcastComponent()
