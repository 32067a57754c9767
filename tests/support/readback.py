"""What the servers finally hold, read back: a topic, a group's offsets, the stored partials.

``read_topic`` gives the topic as it finally is.  The truth (tests/support/truth.py)
is computed over those messages, so a re-sent message that had landed twice
counts twice, as it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aggregator.adapters.hazelcast import HazelcastFeed, connect
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialKey

if TYPE_CHECKING:
    from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer


@dataclass(frozen=True)
class TopicMessage:
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def _partitions(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(p["partition"] for p in described[0]["partitions"])
    assert found, f"topic {topic} has no partitions: {described}"
    return [TopicPartition(topic, p) for p in found]


async def read_topic(
    bootstrap: str,
    topic: str,
    timeout_s: float = 60.0,
    *,
    since_ms: int | None = None,
    security: Mapping[str, Any] | None = None,
) -> list[TopicMessage]:
    """Every message of every partition, from the first (or the first with a
    timestamp of at least ``since_ms``) to the end offset as of now.

    ``security``: the clients' TLS/SASL keyword arguments (``KafkaOptions.client_kwargs()``)."""
    async with asyncio.timeout(timeout_s):
        return await _read_topic(bootstrap, topic, since_ms, security or {})


async def _read_topic(
    bootstrap: str, topic: str, since_ms: int | None, security: Mapping[str, Any]
) -> list[TopicMessage]:
    tps = await _partitions(bootstrap, topic, security)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **security)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            for tp, at in found.items():
                if at is None:  # nothing that recent: start at the end
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, at.offset)
        ends = await consumer.end_offsets(tps)
        messages: list[TopicMessage] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                messages += [
                    TopicMessage(
                        tp.partition,
                        m.offset,
                        m.timestamp,
                        m.value or b"",
                        m.key,
                        tuple(m.headers),
                    )
                    for m in batch
                    if m.offset < ends[tp]
                ]
        return messages
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def committed_offsets(
    bootstrap: str, group: str
) -> AsyncIterator[Callable[[], Awaitable[dict[int, int]]]]:
    """A reader of the group's committed offsets (next offset to read, by partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()

    async def read() -> dict[int, int]:
        async with asyncio.timeout(10):
            offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    try:
        yield read
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset (next offset to be written) of every partition, as of now."""
    return {tp.partition: end for tp, end in (await _end_offsets(bootstrap, topic)).items()}


async def wait_caught_up(
    kafka: KafkaServer, topic: str, group: str, timeout_s: float
) -> dict[int, int]:
    """Until the group's committed offset is the end offset of every partition."""
    deadline = time.monotonic() + timeout_s
    ends = await end_offsets(kafka.bootstrap, topic)
    async with committed_offsets(kafka.bootstrap, group) as read_committed:
        committed: dict[int, int] = {}
        while True:
            with contextlib.suppress(Exception):  # the coordinator may be moving
                committed = await read_committed()
            if all(committed.get(p) == end for p, end in ends.items()):
                return ends
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"group {group} not caught up after {timeout_s:g} s: committed "
                    f"{dict(sorted(committed.items()))}, end {dict(sorted(ends.items()))}"
                )
            await asyncio.sleep(0.5)


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    async with asyncio.timeout(30):
        tps = await _partitions(bootstrap, topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            return ends
        finally:
            await consumer.stop()


async def stored_partials(
    hazelcast: HazelcastCluster, scope: str, source: str
) -> list[tuple[PartialKey, Partial]]:
    """The map ``partials.<scope>`` as the reducer's feed reads it."""
    client = await connect(
        hazelcast.members, hazelcast.cluster_name, client_name=f"{scope}-exactness"
    )
    feed = HazelcastFeed(client, map_name=f"partials.{scope}")
    try:
        entries = await feed.open()
    finally:
        await feed.close()
        await client.shutdown()
    return [(key, partial) for key, partial in entries if key.source == source]
