"""Java servers from Maven Central: find a JDK, fetch a POM's jars into the cache.

Each server has a tiny POM under ``infra/maven/<name>/pom.xml``;
``mvn dependency:copy-dependencies`` copies its runtime jars into
``<cache>/<name>-<version>/lib``.  Maven's own local repository lives in
``<cache>/maven-repository`` (not ~/.m2), so ``AGG_INFRA_CACHE=<empty dir>``
gives a truly cold install and deleting the cache removes every download.
A stamp file holding the POM's hash marks a complete copy: a second install is
a no-op, and editing the POM (a version bump) fetches again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.paths import cache_dir, state_dir
from infra.process import InfraError, ServerProcess, port_open, run_checked

MAVEN_DIR = Path(__file__).resolve().parent
MIN_JAVA = 17
_POM_NS = "{http://maven.apache.org/POM/4.0.0}"
_STAMP = ".complete"

INSTALL_JAVA_HINT = (
    "install a JDK 17+ (e.g. apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
)


def start_timeout_s() -> float:
    """How long a server may take to answer: ``$AGG_INFRA_START_TIMEOUT`` seconds, default 90."""
    return float(os.environ.get("AGG_INFRA_START_TIMEOUT", "90"))


def find_java() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if not os.access(candidate, os.X_OK):
            raise InfraError(
                f"JAVA_HOME={java_home} has no executable bin/java; "
                f"point JAVA_HOME at a JDK {MIN_JAVA}+ or unset it"
            )
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise InfraError(f"Java not found (no JAVA_HOME, no java on PATH); {INSTALL_JAVA_HINT}")
    return found


def java_major(java: str) -> int:
    """The feature release of ``java`` (8, 11, 17, 21, ...), from ``java -version``."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InfraError(f"{java} -version failed: {error}") from error
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if result.returncode != 0 or match is None:
        raise InfraError(f"{java} -version did not report a version (exit {result.returncode})")
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """A usable ``java`` of at least MIN_JAVA, or one InfraError line saying what to do."""
    java = find_java()
    major = java_major(java)
    if major < MIN_JAVA:
        raise InfraError(f"{java} is Java {major}; Kafka 4 and Hazelcast need Java {MIN_JAVA}+")
    return java


def find_mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise InfraError("Maven (mvn) not found on PATH; install it (e.g. apt-get install maven)")
    return found


def maven_repository() -> Path:
    return cache_dir() / "maven-repository"


@dataclass(frozen=True)
class JarSet:
    """The runtime jars of one POM, copied into the cache."""

    name: str  # "kafka", "hazelcast": the folder under infra/maven/
    version_property: str  # the POM property holding the server version

    @property
    def pom(self) -> Path:
        return MAVEN_DIR / self.name / "pom.xml"

    @property
    def version(self) -> str:
        properties = ET.parse(self.pom).getroot().find(f"{_POM_NS}properties")
        value = None if properties is None else properties.findtext(_POM_NS + self.version_property)
        if not value:
            raise InfraError(f"{self.pom} has no <{self.version_property}> property")
        return value.strip()

    @property
    def home(self) -> Path:
        return cache_dir() / f"{self.name}-{self.version}"

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def classpath(self) -> str:
        """A classpath wildcard the JVM expands to every jar in lib/."""
        return str(self.lib / "*")

    @property
    def install_log(self) -> Path:
        return state_dir() / f"{self.name}-install.log"

    def _pom_hash(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def installed(self) -> bool:
        try:
            return (self.lib / _STAMP).read_text().strip() == self._pom_hash()
        except FileNotFoundError:
            return False

    def install(self) -> bool:
        """Fetch the jars unless the cache already holds them; True if it downloaded."""
        with file_lock(cache_dir() / f"{self.name}.install.lock"):
            if self.installed():
                return False
            require_java()
            mvn = find_mvn()
            staging = self.home / "lib.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            run_checked(
                [
                    mvn, "--batch-mode", "--no-transfer-progress", "-Dstyle.color=never",
                    "-f", str(self.pom),
                    f"-Dmaven.repo.local={maven_repository()}",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    "-DincludeScope=runtime",
                ],
                what=f"downloading the {self.name} {self.version} jars with mvn",
                log=self.install_log,
            )  # fmt: skip
            if not any(staging.glob("*.jar")):
                raise InfraError(f"mvn copied no jars for {self.name}; see {self.install_log}")
            (staging / _STAMP).write_text(self._pom_hash() + "\n")
            shutil.rmtree(self.lib, ignore_errors=True)
            staging.rename(self.lib)
            return True

    def require_installed(self) -> None:
        if not self.installed():
            raise InfraError(
                f"{self.name} {self.version} is not installed; run `make infra-install` "
                f"(or: python -m infra install {self.name})"
            )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two installs or two starts never race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def java_process_alive(server: ServerProcess, marker: str) -> bool:
    """True if the recorded pid is alive and is our JVM (its command line contains ``marker``).

    A pid file that outlived its process (a reboot, a killed session) may name an
    unrelated process by now: such a file is removed, so nothing ever signals it.
    """
    pid = server.pid()
    if pid is None:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        args = []
    if marker.encode() in args:
        return True
    server.pid_file.unlink(missing_ok=True)
    return False


def wait_ports_closed(host: str, ports: list[int], *, timeout_s: float = 10.0) -> None:
    """After a stop: the last JVM threads may hold the sockets a moment after the pid is gone."""
    deadline = time.monotonic() + timeout_s
    while any(port_open(host, port, timeout_s=0.2) for port in ports):
        if time.monotonic() > deadline:
            taken = ", ".join(str(port) for port in ports if port_open(host, port))
            raise InfraError(f"ports {taken} on {host} still answer {timeout_s:.0f} s after stop")
        time.sleep(0.05)
