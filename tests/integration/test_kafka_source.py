"""KafkaSource beyond the shared contract: failures at start, keys and headers,
stopping while a fetch waits."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiokafka import AIOKafkaProducer

from aggregator.adapters.kafka.records import KafkaRecord
from aggregator.adapters.kafka.source import KafkaSource, fetch_limits
from aggregator.ports.source import SourceRecord, SourceUnavailable
from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name


class Listener:
    def __init__(self) -> None:
        self.revoked: list[frozenset[int]] = []
        self.assigned: list[frozenset[int]] = []

    async def on_revoked(self, partitions: frozenset[int]) -> None:
        self.revoked.append(partitions)

    async def on_assigned(self, partitions: frozenset[int]) -> None:
        self.assigned.append(partitions)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_fetch_limits_fit_the_largest_accepted_message() -> None:
    assert fetch_limits(65536) == (1024 * 1024, 16 * 1024 * 1024)
    per_partition, total = fetch_limits(4 * 1024 * 1024)
    assert per_partition == 8 * 1024 * 1024
    assert total >= per_partition


async def test_an_unreachable_broker_at_start_is_source_unavailable() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    source = KafkaSource(bootstrap, "crash-events", "g", "c", start_timeout_s=10)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=bootstrap):
        await source.start(Listener())
    assert time.monotonic() - started < 8
    assert source.assignment() == frozenset()
    await source.stop()  # nothing to stop: no error


@pytest.mark.kafka
async def test_a_missing_topic_is_source_unavailable_naming_it(kafka: KafkaServer) -> None:
    topic = unique_name("missing")
    source = KafkaSource(kafka.bootstrap, topic, unique_name("g"), "c")
    with pytest.raises(SourceUnavailable, match=f"topic '{topic}' does not exist"):
        await source.start(Listener())


@pytest.mark.kafka
async def test_records_keep_key_and_headers_and_stop_interrupts_a_waiting_fetch(
    kafka: KafkaServer, kafka_topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka_topic, b"{}", key=b"device-7", partition=2, headers=[("trace", b"abc")]
        )
    finally:
        await producer.stop()
    listener = Listener()
    source = KafkaSource(
        kafka.bootstrap, kafka_topic, unique_name("g"), "c", heartbeat_interval_s=0.2
    )
    await source.start(listener)
    records: list[SourceRecord] = []
    deadline = time.monotonic() + 20
    while not records and time.monotonic() < deadline:
        records = await source.fetch(100, 0.2)

    assert len(records) == 1
    record = records[0]
    assert isinstance(record, KafkaRecord)
    assert (record.partition, record.offset, record.value) == (2, 0, b"{}")
    assert record.key == b"device-7"
    assert record.headers == (("trace", b"abc"),)
    assert listener.assigned == [frozenset(range(6))]

    waiting = asyncio.create_task(source.fetch(100, 5.0))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await source.stop()
    assert await asyncio.wait_for(waiting, 2.0) == []
    assert time.monotonic() - started < 3
    assert listener.revoked == [frozenset(range(6))]
    assert source.assignment() == frozenset()
