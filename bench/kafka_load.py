"""Topics for the benchmarks: produce a workload once, fast; read end offsets;
clean up every topic a run made (its own, and the peer's changelogs)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aggregator.adapters.kafka.topics import ensure_topic
from bench.workload import Event

BATCH_BYTES = 1024 * 1024
IN_FLIGHT = 24
"""Batches sent but not yet acknowledged, at most."""


async def produce(bootstrap: str, topic: str, events: Iterable[Event], partitions: int) -> float:
    """Send ``events`` round-robin over the partitions (event ``i`` to partition
    ``i % partitions``), each with its event time as the Kafka timestamp and its
    app as the key, in record batches built directly; returns the seconds taken."""
    await ensure_topic(bootstrap, topic, partitions=partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=BATCH_BYTES, linger_ms=5
    )
    await producer.start()
    started = time.perf_counter()
    try:
        batches = [producer.create_batch() for _ in range(partitions)]
        pending: list[asyncio.Future[Any]] = []
        for index, event in enumerate(events):
            partition = index % partitions
            batch = batches[partition]
            if batch.append(key=event.key, value=event.value, timestamp=event.ts_ms) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=event.key, value=event.value, timestamp=event.ts_ms)
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        for partition, batch in enumerate(batches):
            if batch.record_count():
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def delete_topics(bootstrap: str, containing: str) -> list[str]:
    """Delete every topic whose name contains ``containing`` (a run's unique prefix)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if containing in t]
        if names:
            await admin.delete_topics(names)
        return names
    except Exception as error:  # cleanup only: say so and go on
        print(f"  (could not delete topics with {containing!r}: {error})", file=sys.stderr)
        return []
    finally:
        await admin.close()
