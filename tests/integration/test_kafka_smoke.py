"""The local Kafka broker works with the client the aggregator uses (aiokafka)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import time

import aiokafka.protocol
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.protocol.api import Request

from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name

pytestmark = pytest.mark.kafka

MESSAGES = 10_000
PARTITIONS = 6


async def _produce(bootstrap: str, topic: str, count: int, *, start: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=str(i).encode(), value=f"event-{i}".encode())
            for i in range(start, start + count)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def _consume_all(
    bootstrap: str, topic: str, group: str, count: int
) -> tuple[list[str], dict[TopicPartition, int]]:
    """Read ``count`` messages in group ``group``, committing after each batch.

    Returns the values and the end offsets, after checking that the group's
    committed offsets equal the end offsets.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                values.extend(record.value.decode() for record in records)
            if batches:
                await consumer.commit()
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end = await consumer.end_offsets(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    assert committed == end, f"committed offsets {committed} differ from end offsets {end}"
    return values, end


async def test_produce_and_consume_10000_in_a_group_with_committed_offsets(
    kafka: KafkaServer, kafka_topic: str
) -> None:
    await _produce(kafka.bootstrap, kafka_topic, MESSAGES)

    group = unique_name("smoke")
    values, end = await _consume_all(kafka.bootstrap, kafka_topic, group, MESSAGES)

    assert len(values) == MESSAGES
    assert set(values) == {f"event-{i}" for i in range(MESSAGES)}
    assert sum(end.values()) == MESSAGES
    assert all(offset > 0 for offset in end.values()), f"a partition got nothing: {end}"


async def test_every_aiokafka_request_has_a_version_the_broker_accepts(kafka: KafkaServer) -> None:
    """Guards a Kafka upgrade: Kafka 4 dropped old protocol versions (KIP-896)."""
    host, port = kafka.bootstrap.split(":")
    conn = await create_conn(host, int(port))
    try:
        response = await conn.send(ApiVersionRequest())
    finally:
        conn.close()
    broker = {key: (low, high) for key, low, high in response.api_versions}
    requests = _request_types()
    assert len(requests) > 20
    unsupported = []
    for request in requests:
        key = request._CLASSES[0].API_KEY
        ours = [cls.API_VERSION for cls in request._CLASSES]
        low, high = broker.get(key, (1, 0))
        if not any(low <= version <= high for version in ours):
            unsupported.append(f"{request.__name__} (aiokafka {ours}, broker {low}..{high})")
    assert not unsupported, f"Kafka {kafka.version} rejects: {', '.join(unsupported)}"


def _request_types() -> list[type[Request]]:
    """Every request type aiokafka can send (each lists its versions in ``_CLASSES``)."""
    for module in pkgutil.iter_modules(aiokafka.protocol.__path__):
        importlib.import_module(f"aiokafka.protocol.{module.name}")
    found: set[type[Request]] = set()
    pending: list[type[Request]] = list(Request.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if getattr(cls, "_CLASSES", None):
            found.add(cls)
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.slow
async def test_topics_and_committed_offsets_survive_a_broker_restart(
    kafka: KafkaServer, kafka_topic: str
) -> None:
    await _produce(kafka.bootstrap, kafka_topic, 600)
    group = unique_name("restart")
    await _consume_all(kafka.bootstrap, kafka_topic, group, 600)

    kafka.kill()
    assert not kafka.running()
    kafka.start()

    await _produce(kafka.bootstrap, kafka_topic, 60, start=600)
    values, _ = await _consume_all(kafka.bootstrap, kafka_topic, group, 60)
    # The group resumes at its committed offsets: only the new messages come back.
    assert sorted(values) == sorted(f"event-{i}" for i in range(600, 660))
