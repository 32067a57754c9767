"""Rejected messages land on the dead-letter topic unchanged, with their origin."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from aggregator.adapters.kafka.dead_letters import KafkaDeadLetters
from aggregator.adapters.kafka.records import KafkaRecord
from aggregator.ports.source import SourceRecord
from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name

pytestmark = pytest.mark.kafka

SOURCE = "crash-events"


async def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + 20
        while len(messages) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                messages.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            messages.extend(batch)
    finally:
        await consumer.stop()
    return sorted(messages, key=lambda m: int(dict(m.headers)["source-offset"]))


def headers(message: Any) -> dict[str, bytes]:
    return dict(message.headers)


async def small_topic(kafka: KafkaServer, hint: str) -> str:
    """A new one-partition topic that takes batches of at most 2,000 bytes."""
    topic = unique_name(hint)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})]
        )
    finally:
        await admin.close()
    return topic


async def test_rejected_messages_land_unchanged_with_reason_and_origin(kafka: KafkaServer) -> None:
    topic = unique_name("dlq")  # missing: start() creates it
    dead_letters = KafkaDeadLetters(kafka.bootstrap, topic, source_topic=SOURCE)
    await dead_letters.start()
    keyed = KafkaRecord(
        3, 41, 1_700_000_000.25, b'{"ts": 17\xff}', b"device-9", (("trace", b"t1"),)
    )
    plain = SourceRecord(5, 42, 1_700_000_001.5, b"[1, 2]")
    batch = [KafkaRecord(1, 100 + i, 1_700_000_002.0, b"x" * i, None) for i in range(50)]
    try:
        await dead_letters.send(keyed, "invalid_json")
        await dead_letters.send(plain, "not_object")
        await dead_letters.send_many([(record, "too_large") for record in batch])
    finally:
        await dead_letters.stop()

    messages = await read_all(kafka.bootstrap, topic, 52)

    assert len(messages) == 52
    first, second, *rest = messages
    assert first.value == keyed.value
    assert first.key == b"device-9"
    assert first.headers[0] == ("trace", b"t1")
    assert headers(first) == {
        "trace": b"t1",
        "reason": b"invalid_json",
        "source-topic": SOURCE.encode(),
        "source-partition": b"3",
        "source-offset": b"41",
        "source-timestamp": b"1700000000250",
    }
    assert (second.value, second.key) == (b"[1, 2]", None)
    assert headers(second)["reason"] == b"not_object"
    assert headers(second)["source-partition"] == b"5"
    assert headers(second)["source-timestamp"] == b"1700000001500"
    assert [m.value for m in rest] == [r.value for r in batch]
    assert {headers(m)["reason"] for m in rest} == {b"too_large"}


async def test_a_message_too_large_for_the_topic_leaves_a_stub_pointing_at_it(
    kafka: KafkaServer,
) -> None:
    topic = await small_topic(kafka, "dlq-small")
    dead_letters = KafkaDeadLetters(kafka.bootstrap, topic, source_topic=SOURCE)
    await dead_letters.start()
    try:
        await dead_letters.send_many(
            [
                (SourceRecord(0, 7, 1_700_000_000.0, b"y" * 50_000), "too_large"),
                *[(SourceRecord(0, 8 + i, 1_700_000_000.0, b"z" * 600), "late") for i in range(5)],
            ]
        )
    finally:
        await dead_letters.stop()

    # The five 600-byte messages fit one by one, not in one batch: none is a stub.
    stub, *small = await read_all(kafka.bootstrap, topic, 6)

    assert stub.value == b""
    assert headers(stub)["value-omitted"] == b"50000"
    assert headers(stub)["source-offset"] == b"7"
    assert headers(stub)["reason"] == b"too_large"
    assert [m.value for m in small] == [b"z" * 600] * 5


async def test_a_refused_batch_does_not_wedge_the_producer(kafka: KafkaServer) -> None:
    """After a letter the broker refuses (too large for the topic), later letters
    still go through.  An idempotent producer failed here: the refused batch spent
    its sequence numbers, so every later send got OutOfOrderSequenceNumber, and the
    map stage could never flush again (found by tests/integration/test_chaos.py,
    whose own idempotent producer wedged after a broker restart)."""
    topic = await small_topic(kafka, "dlq-wedge")
    dead_letters = KafkaDeadLetters(
        kafka.bootstrap, topic, source_topic=SOURCE, delivery_timeout_s=10
    )
    await dead_letters.start()
    try:
        await dead_letters.send(SourceRecord(0, 1, 1_700_000_000.0, b"a" * 100), "late")
        await dead_letters.send(SourceRecord(0, 2, 1_700_000_000.0, b"b" * 50_000), "too_large")
        await dead_letters.send(SourceRecord(0, 3, 1_700_000_000.0, b"c" * 100), "late")
    finally:
        await dead_letters.stop()

    messages = await read_all(kafka.bootstrap, topic, 3)

    assert [headers(m)["source-offset"] for m in messages] == [b"1", b"2", b"3"]
    assert [m.value for m in messages] == [b"a" * 100, b"", b"c" * 100]
