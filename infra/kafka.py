"""A single-node Kafka broker on loopback, from Maven Central jars.

- Jars: ``infra/maven/kafka/pom.xml`` (the Kafka version lives there), copied
  into ``<cache>/kafka-<version>/lib`` by ``python -m infra install kafka``.
- Server: one JVM that is both KRaft controller (127.0.0.1:19093) and broker
  (127.0.0.1:19092); settings in ``infra/config/kafka-server.properties``, log
  in ``<state>/kafka.log``, data in ``<state>/kafka/data``.
- Secured listeners on 127.0.0.1:19095-19097 (SASL_SSL with SCRAM-SHA-512,
  SASL_SSL with PLAIN, SSL with client certificates): certificates and users in
  ``<state>/kafka/security``, made at ``up`` (infra/kafka_security.py).
- ``up`` formats the storage on first start only, so ``stop``/``start`` (and a
  SIGKILL) keep topics and committed offsets; ``down`` stops it and deletes the
  data.  Ready means: the broker lists itself in a Metadata response and the
  group coordinator answers FindCoordinator (the offsets topic exists), so the
  first consumer group of a test does not wait for it.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

from infra import kafka_security
from infra.maven import (
    JarSet,
    file_lock,
    java_process_alive,
    require_java,
    start_timeout_s,
    wait_ports_closed,
)
from infra.node.layout import NODE_IP
from infra.paths import REPO_ROOT, state_dir
from infra.process import InfraError, ServerProcess, require_free_port, run_checked

HOST = "127.0.0.1"
PORT = 19092
CONTROLLER_PORT = 19093
BOOTSTRAP = f"{HOST}:{PORT}"
#: Where the local node's pods reach the broker (the node address; see infra/node).
PODS_HOST = NODE_IP
PODS_PORT = 19094
PODS_BOOTSTRAP = f"{PODS_HOST}:{PODS_PORT}"
SECURED_PORTS = [kafka_security.SCRAM_PORT, kafka_security.PLAIN_PORT, kafka_security.MTLS_PORT]

JARS = JarSet("kafka", "kafka.version")
SERVER = ServerProcess("kafka")
MAIN_CLASS = "kafka.Kafka"
CONFIG_TEMPLATE = REPO_ROOT / "infra" / "config" / "kafka-server.properties"
LOG_CONFIG = REPO_ROOT / "infra" / "config" / "kafka-log4j2.xml"
JVM_OPTIONS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
    f"-Dlog4j2.configurationFile={LOG_CONFIG}",
]


def kafka_state() -> Path:
    return state_dir() / "kafka"


def data_dir() -> Path:
    return kafka_state() / "data"


def config_file() -> Path:
    return kafka_state() / "server.properties"


def scram_marker() -> Path:
    """The SCRAM credential the storage holds (a digest), written when it was added."""
    return kafka_state() / "scram-registered"


def tests_own_marker() -> Path:
    """Present while the running broker was started by a test session (which stops it)."""
    return state_dir() / "kafka.started-by-tests"


# --- a few Kafka protocol requests, enough to tell that the broker answers ----


def _call(api_key: int, api_version: int, body: bytes, *, timeout_s: float = 2.0) -> bytes:
    """Send one request (header v1) and return the response body after the correlation id."""
    client_id = b"stream-aggregator-infra"
    correlation_id = 1
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    request = header + body
    with socket.create_connection((HOST, PORT), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        response = _read_exactly(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation_id:
        raise InfraError("Kafka answered with another correlation id")
    return response[4:]


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("Kafka closed the connection")
        chunks += chunk
    return bytes(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.at : self.at + length].decode()
        self.at += length
        return value


def metadata_brokers(timeout_s: float = 2.0) -> list[tuple[int, str, int]]:
    """(node id, host, port) of the brokers in a Metadata v4 response (no topics asked)."""
    # v4 body: topics = empty array (brokers only), allow_auto_topic_creation = false
    reader = _Reader(_call(3, 4, struct.pack(">ib", 0, 0), timeout_s=timeout_s))
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        host = reader.string() or ""
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, host, port))
    return brokers


def group_coordinator_ready(group: str = "stream-aggregator-infra", timeout_s: float = 2.0) -> bool:
    """FindCoordinator v1 for a consumer group succeeds (creates the offsets topic if needed)."""
    key = group.encode()
    reader = _Reader(_call(10, 1, struct.pack(">h", len(key)) + key + b"\x00", timeout_s=timeout_s))
    reader.take(">i")  # throttle_time_ms
    return reader.take(">h") == 0  # error_code


def broker_ready() -> bool:
    return (HOST, PORT) in [(h, p) for _, h, p in metadata_brokers()] and group_coordinator_ready()


# --- the component ------------------------------------------------------------


def _new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, not starting '-'."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def _write_config(material: kafka_security.SecurityMaterial) -> Path:
    data_dir().mkdir(parents=True, exist_ok=True)
    secured = kafka_security.listeners()
    generated = "\n".join(
        [
            "",
            "# --- added by infra/kafka.py for this machine ---",
            # PODS: the listener for the local node's pods, which reach the host
            # at the node address on the bridge (infra/node/layout.py). It binds
            # every interface because the bridge may not exist yet when the
            # broker starts; the node's iptables rules keep pods on the bridge.
            f"listeners=PLAINTEXT://{HOST}:{PORT},CONTROLLER://{HOST}:{CONTROLLER_PORT},"
            f"PODS://0.0.0.0:{PODS_PORT},{','.join(secured)}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{PORT},PODS://{PODS_HOST}:{PODS_PORT},"
            f"{','.join(secured)}",
            f"controller.quorum.voters=1@{HOST}:{CONTROLLER_PORT}",
            f"log.dirs={data_dir()}",
            *kafka_security.server_properties(material),
            "",
        ]
    )
    config_file().write_text(CONFIG_TEMPLATE.read_text() + generated)
    return config_file()


def _scram_digest(material: kafka_security.SecurityMaterial) -> str:
    return hashlib.sha256(kafka_security.scram_credential(material).encode()).hexdigest()


def _format_storage(java: str, config: Path, material: kafka_security.SecurityMaterial) -> None:
    if (data_dir() / "meta.properties").exists():
        return
    run_checked(
        [
            java, "-Xmx256m", f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-Dagg.kafka.log.level=WARN", "-cp", JARS.classpath,
            "kafka.tools.StorageTool", "format", "--ignore-formatted",
            "-t", _new_cluster_id(), "-c", str(config),
            "--add-scram", kafka_security.scram_credential(material),
        ],
        what="formatting the Kafka storage (kafka.tools.StorageTool)",
        log=SERVER.log_file,
    )  # fmt: skip
    scram_marker().write_text(_scram_digest(material) + "\n")


def _register_scram_user(java: str, material: kafka_security.SecurityMaterial) -> None:
    """Add (or change) the SCRAM user through the running broker, for a storage
    formatted before the current users.json was made."""
    if scram_marker().is_file() and scram_marker().read_text().strip() == _scram_digest(material):
        return
    run_checked(
        [
            java, "-Xmx128m", f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            "-Dagg.kafka.log.level=WARN", "-cp", JARS.classpath,
            "kafka.admin.ConfigCommand", "--bootstrap-server", BOOTSTRAP, "--alter",
            "--add-config", kafka_security.scram_config(material),
            "--entity-type", "users", "--entity-name", kafka_security.SCRAM_USER,
        ],
        what="adding the SCRAM user (kafka.admin.ConfigCommand)",
        log=SERVER.log_file,
    )  # fmt: skip
    scram_marker().write_text(_scram_digest(material) + "\n")


class KafkaComponent:
    """install / up / down / status for ``python -m infra``, plus stop/kill/start for tests."""

    name = "kafka"
    bootstrap = BOOTSTRAP

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
            f"kafka: {JARS.version} jars {action} at {JARS.lib} "
            f"[{time.monotonic() - started:.1f} s]",
            file=sys.stderr,
        )

    def running(self) -> bool:
        return java_process_alive(SERVER, MAIN_CLASS)

    def start(self, *, for_tests: bool = False) -> bool:
        """Start the broker unless it runs, wait until it answers; True if this call started it."""
        with file_lock(state_dir() / "kafka.lock"):
            if self.running():
                SERVER.wait_ready(broker_ready, timeout_s=start_timeout_s(), what="Kafka")
                return False
            java = require_java()
            require_free_port(HOST, PORT, "the Kafka broker")
            require_free_port(HOST, CONTROLLER_PORT, "the Kafka controller")
            for port in SECURED_PORTS:
                require_free_port(HOST, port, "a secured Kafka listener")
            JARS.require_installed()
            material = kafka_security.ensure_material(kafka_state())
            config = _write_config(material)
            _format_storage(java, config, material)
            SERVER.start(
                [java, *JVM_OPTIONS, "-cp", JARS.classpath, MAIN_CLASS, str(config)],
                cwd=kafka_state(),
            )
            try:
                SERVER.wait_ready(broker_ready, timeout_s=start_timeout_s(), what="Kafka")
                _register_scram_user(java, material)
            except InfraError:
                SERVER.stop(timeout_s=5)
                raise
            if for_tests:
                tests_own_marker().write_text(f"{SERVER.pid()}\n")
            return True

    def up(self) -> None:
        started = time.monotonic()
        did_start = self.start()
        # Started (or adopted) by a developer: no test session may stop it now.
        tests_own_marker().unlink(missing_ok=True)
        how = f"started in {time.monotonic() - started:.1f} s" if did_start else "already running"
        print(
            f"kafka: {JARS.version} ready at {BOOTSTRAP} ({how}; pid {SERVER.pid()}, "
            f"log {SERVER.log_file}); secured listeners "
            f"{', '.join(kafka_security.listeners())}, certificates and users in "
            f"{kafka_security.material_dir(kafka_state())}",
            file=sys.stderr,
        )

    def stop(self) -> bool:
        """Controlled shutdown; topics and offsets stay for the next start."""
        stopped = self.running() and SERVER.stop(timeout_s=30)
        if stopped:
            wait_ports_closed(HOST, [PORT, CONTROLLER_PORT, *SECURED_PORTS])
        return stopped

    def kill(self) -> bool:
        """SIGKILL; the next start recovers the logs."""
        killed = self.running() and SERVER.kill()
        if killed:
            wait_ports_closed(HOST, [PORT, CONTROLLER_PORT, *SECURED_PORTS])
        return killed

    def down(self) -> None:
        was_running = self.stop()
        shutil.rmtree(kafka_state(), ignore_errors=True)
        tests_own_marker().unlink(missing_ok=True)
        print(
            f"kafka: {'stopped' if was_running else 'was not running'}; data removed",
            file=sys.stderr,
        )

    def status(self) -> None:
        if self.running():
            print(f"kafka: running at {BOOTSTRAP} (pid {SERVER.pid()}, log {SERVER.log_file})")
        else:
            installed = "installed" if JARS.installed() else "not installed"
            print(f"kafka: stopped ({JARS.version} {installed})")


COMPONENT = KafkaComponent()
