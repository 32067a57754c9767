"""Kafka security against the real broker's secured listeners (infra/kafka_security.py).

Over SASL_SSL with SCRAM-SHA-512, SASL_SSL with PLAIN and SSL with a client
certificate, configured only through the ``AGG_*`` variables of the README:
``aggregator produce`` creates a topic and fills it, the map stage reads every
message of it and sends the malformed ones to its dead-letter topic.

A wrong password, a CA that did not sign the broker's certificate and an expired
client certificate each give one line that says so: ``aggregator produce`` exits
with status 1, ``aggregator run`` keeps running and serving, not ready, and logs
it once in 20 s instead of at every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from aggregator.adapters.kafka.dead_letters import KafkaDeadLetters
from aggregator.adapters.kafka.source import KafkaSource
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.store import MemoryStoreClient, MemoryStoreServer
from aggregator.services.map_stage import MapStage
from aggregator.services.pod import NOT_READY_MAP
from aggregator.wiring.compose import pod_settings
from aggregator.wiring.production import kafka_options
from aggregator.wiring.settings import Settings, load_settings
from harness.pods import (
    REPO,
    ClusterConfig,
    PodProcess,
    aggregator_command,
    clean_environment,
    free_port,
)
from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer, unique_name
from tests.fixtures.kube import KubeApi
from tests.support.readback import read_topic

pytestmark = pytest.mark.kafka

LISTENERS = ["sasl-scram", "sasl-plain", "mtls"]
PRODUCED = 300
WATCH_S = 20.0
"""How long a refused pod is watched: it must log its refusal once in that time."""
QUIET_LINES = 5
"""At most this many lines in those 20 s (membership changes of the other pods)."""


def settings_from(env: dict[str, str]) -> Settings:
    """The settings ``aggregator run`` would read from these variables."""
    return load_settings(
        **{name.removeprefix("AGG_").lower(): value for name, value in env.items()}
    )


def produce(env: dict[str, str], topic: str) -> subprocess.CompletedProcess[str]:
    """``aggregator produce`` with nothing but ``env`` to reach the broker."""
    return subprocess.run(
        [
            *aggregator_command("produce"), "--topic", topic, "--rate", str(PRODUCED),
            "--duration", "1", "--bad-fraction", "0.1", "--seed", "5", "--partitions", "2",
        ],
        env=clean_environment() | env, capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False,
    )  # fmt: skip


async def map_everything(settings: Settings, topic: str, dead_letter_topic: str) -> MapStage:
    """Run a map stage (memory store) on ``topic`` until it has read ``PRODUCED``
    records, then stop it as a pod does (flush, deliver dead letters, commit)."""
    options = kafka_options(settings)
    bootstrap = settings.kafka_bootstrap_servers
    dead_letters = KafkaDeadLetters(
        bootstrap, dead_letter_topic, source_topic=topic, options=options
    )
    source = KafkaSource(
        bootstrap, topic, unique_name("secured"), "secured-test", options=options,
        session_timeout_s=6.0, heartbeat_interval_s=0.5,
    )  # fmt: skip
    clock = SystemClock()
    stage = MapStage(
        source,
        MemoryStoreClient(MemoryStoreServer(clock, ttl_s=3600)),
        clock,
        pod_settings(settings).fold,
        flush_interval_s=0.2,
        dead_letters=dead_letters,
    )
    task = asyncio.create_task(stage.run())
    try:
        deadline = time.monotonic() + 30
        while stage.stats.records < PRODUCED and not task.done():
            assert time.monotonic() < deadline, f"read {stage.stats.records} of {PRODUCED}"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stage.stop()
        await dead_letters.stop()
    return stage


@pytest.mark.parametrize("listener", LISTENERS)
async def test_produce_map_stage_and_dead_letters_work_over_the_secured_listener(
    kafka: KafkaServer, listener: str
) -> None:
    env = kafka.secured_settings(listener)
    topic = unique_name(f"secured-{listener}")

    produced = await asyncio.to_thread(produce, env, topic)

    assert produced.returncode == 0, produced.stderr
    report = orjson.loads(produced.stdout)
    malformed = sum(report["malformed"].values())
    assert report["created_topic"] is True
    assert report["valid"] + malformed == PRODUCED
    assert malformed > 0

    settings = settings_from(env)
    stage = await map_everything(settings, topic, f"{topic}.dlq")

    assert stage.stats.records == PRODUCED
    assert stage.stats.counted == report["valid"]
    assert stage.stats.dropped == report["malformed"]
    dead = await read_topic(
        settings.kafka_bootstrap_servers,
        f"{topic}.dlq",
        security=kafka_options(settings).client_kwargs(),
    )
    assert Counter(dict(m.headers)["source-topic"] for m in dead) == {topic.encode(): malformed}


@dataclass(frozen=True)
class Refusal:
    listener: str
    change: dict[str, str]
    says: str
    """What the one line says."""


def refusals(kafka: KafkaServer) -> dict[str, Refusal]:
    return {
        "wrong password": Refusal(
            "sasl-scram",
            {"AGG_KAFKA_SASL_PASSWORD": "not-the-password"},
            "the broker refused the SCRAM-SHA-512 login of user 'aggregator-scram'",
        ),
        "unknown CA": Refusal(
            "sasl-plain",
            {"AGG_KAFKA_SSL_CAFILE": kafka.security_file("unknown-ca.crt")},
            "the broker's certificate is not trusted by " + kafka.security_file("unknown-ca.crt"),
        ),
        "expired client certificate": Refusal(
            "mtls",
            {
                "AGG_KAFKA_SSL_CERTFILE": kafka.security_file("expired.crt"),
                "AGG_KAFKA_SSL_KEYFILE": kafka.security_file("expired.key"),
            },
            f"the broker refused client certificate {kafka.security_file('expired.crt')} "
            "(sslv3 alert certificate unknown): it expired on",
        ),
    }


async def said_once(pod: PodProcess, says: str, timeout_s: float = 30.0) -> int:
    """Wait until the pod's log says ``says``; the number of lines by then."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = pod.log.read_text(errors="replace").splitlines()
        if any(says in line for line in log):
            return len(log)
        assert pod.alive(), f"{pod.name} exited ({pod.process.returncode})\n{pod.output()}"
        assert time.monotonic() < deadline, f"{pod.name} never said {says!r}\n{pod.output()}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("case", ["wrong password", "unknown CA", "expired client certificate"])
async def test_produce_refused_says_why_in_one_line(kafka: KafkaServer, case: str) -> None:
    refusal = refusals(kafka)[case]
    env = kafka.secured_settings(refusal.listener) | refusal.change

    produced = await asyncio.to_thread(produce, env, unique_name("refused"))

    assert produced.returncode == 1, produced.stderr
    lines = produced.stderr.splitlines()
    assert len(lines) == 1, produced.stderr
    assert refusal.says in lines[0]


@pytest.mark.hazelcast
@pytest.mark.kube
@pytest.mark.slow
async def test_refused_pods_stay_up_not_ready_and_say_why_once(
    kube_api: KubeApi,
    kube_namespace: str,
    kafka: KafkaServer,
    hazelcast: HazelcastCluster,
    tmp_path: Path,
) -> None:
    config = ClusterConfig(
        kubeconfig=kube_api.kubeconfig,
        namespace=kube_namespace,
        kafka_bootstrap=kafka.bootstrap,
        topic=unique_name("refused"),
        hazelcast_members=list(hazelcast.members),
        hazelcast_cluster_name=hazelcast.cluster_name,
    )
    pods: dict[str, PodProcess] = {}
    cases = refusals(kafka)
    try:
        # The three side by side: one watch of 20 s for all of them.
        for index, (case, refusal) in enumerate(cases.items()):
            name = f"refused-{index}"
            env = config.environment(name, free_port())
            env |= kafka.secured_settings(refusal.listener) | refusal.change
            pods[case] = PodProcess(name, env, tmp_path / f"{name}.log")
        await asyncio.gather(*(pod.wait_up() for pod in pods.values()))
        # Started: each has said why it is not ready (the clients' start-up
        # chatter is over); from here on it retries, and must do so quietly.
        started = {case: await said_once(pod, cases[case].says) for case, pod in pods.items()}
        await asyncio.sleep(WATCH_S)

        async with httpx.AsyncClient(timeout=5.0) as http:
            for case, pod in pods.items():
                assert pod.alive(), f"{case}: exited ({pod.process.returncode})\n{pod.output()}"
                ready = await http.get(pod.url + "/readyz")
                assert ready.status_code == 503, f"{case}: {ready.text}"
                assert NOT_READY_MAP in ready.json()["why"]
                live = await http.get(pod.url + "/healthz")
                assert live.status_code == 200, f"{case}: {live.text}"
                log = pod.log.read_text(errors="replace").splitlines()
                said = [line for line in log if cases[case].says in line]
                assert len(said) == 1, f"{case}: {len(said)} lines say why\n" + "\n".join(log)
                assert not [line for line in log if "Traceback" in line], "\n".join(log)
                kafka_lines = [line for line in log if "Kafka" in line or "aiokafka" in line]
                assert kafka_lines == said, "\n".join(log)
                later = log[started[case] :]
                assert len(later) <= QUIET_LINES, (
                    f"{case}: {len(later)} lines in {WATCH_S:g} s\n" + ("\n".join(later))
                )
    finally:
        for pod in pods.values():
            pod.stop()
