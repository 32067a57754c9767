"""produce_synthetic: creates the topic, paces to the rate, and reports exactly
what a consumer then reads."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from aggregator.adapters.kafka.producer import produce_synthetic
from aggregator.core.decode import Decoder
from aggregator.core.events import EventSchema, Reject
from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name


async def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    messages: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(messages) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                messages.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


@pytest.mark.kafka
async def test_produce_creates_the_topic_and_the_counts_match_what_is_read(
    kafka: KafkaServer,
) -> None:
    topic = unique_name("produce")

    report = await produce_synthetic(
        kafka.bootstrap, topic, rate=200, duration_s=2.0, bad_fraction=0.1, seed=7, partitions=3
    )

    assert (report.topic, report.partitions, report.created_topic) == (topic, 3, True)
    assert report.sent == 400
    assert 1.8 <= report.elapsed_s < 6.0
    assert report.malformed
    assert set(report.malformed) <= {r.value for r in Reject}
    assert report.valid > 300

    messages = await read_all(kafka.bootstrap, topic, report.sent)
    assert len(messages) == report.sent
    assert {m.partition for m in messages} == {0, 1, 2}
    decoder = Decoder(EventSchema())
    outcomes = [decoder.decode(m.value) for m in messages]
    rejected = Counter(str(o) for o in outcomes if isinstance(o, Reject))
    assert dict(rejected) == report.malformed
    assert len(messages) - rejected.total() == report.valid
    for message, outcome in zip(messages, outcomes, strict=True):
        if isinstance(outcome, Reject):
            assert message.key is None
        else:
            assert message.key == orjson.loads(message.value)["device_id"].encode()
    now = time.time()
    assert all(now - 60 < m.timestamp / 1000 <= now + 1 for m in messages)

    again = await produce_synthetic(
        kafka.bootstrap, topic, rate=50, duration_s=0.2, bad_fraction=0.0, partitions=6
    )
    assert (again.partitions, again.created_topic, again.sent) == (3, False, 10)
    assert again.malformed == {}
    assert "10 valid" in again.summary()


async def test_produce_rejects_a_nonpositive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        await produce_synthetic("127.0.0.1:1", "t", rate=0, duration_s=1.0)
