"""Create a topic when it is missing (the load generator and the dead-letter topic)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from aggregator.adapters.kafka.errors import unavailable
from aggregator.adapters.kafka.handshake import check_access
from aggregator.adapters.kafka.options import KafkaOptions

MAX_REPLICATION = 3


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    created: bool
    """False when the topic already existed (its partition count is left alone)."""


async def ensure_topic(
    bootstrap: str,
    name: str,
    *,
    partitions: int,
    replication_factor: int | None = None,
    options: KafkaOptions | None = None,
    timeout_s: float = 30.0,
) -> TopicInfo:
    """Create ``name`` with ``partitions`` partitions unless it exists, then wait
    until every partition has a leader.  The replication factor defaults to the
    number of brokers, at most 3.  Failures raise ``SourceUnavailable``
    (``SourceRefused`` for credentials the broker refuses)."""
    if partitions <= 0:
        raise ValueError("a topic needs at least one partition")
    options = options or KafkaOptions()
    await check_access(bootstrap, options, timeout_s=timeout_s)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="stream-aggregator-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **options.client_kwargs(),
    )
    with unavailable(bootstrap, f"create topic {name!r}"):
        async with asyncio.timeout(timeout_s):
            try:
                await admin.start()
                info = await _ensure(admin, name, partitions, replication_factor)
            finally:
                await admin.close()
    return info


async def _ensure(
    admin: AIOKafkaAdminClient, name: str, partitions: int, replication_factor: int | None
) -> TopicInfo:
    # list_topics asks for every topic: naming ours could auto-create it on brokers
    # that allow that, with the broker's default partition count.
    created = False
    if name not in await admin.list_topics():
        if replication_factor is None:
            brokers = (await admin.describe_cluster())["brokers"]
            replication_factor = max(1, min(MAX_REPLICATION, len(brokers)))
        response = await admin.create_topics([NewTopic(name, partitions, replication_factor)])
        for item in response.topic_errors:
            code = item[1]
            if code == 0:
                created = True
            elif code != TopicAlreadyExistsError.errno:
                message = item[2] if len(item) > 2 and item[2] else ""
                raise for_code(code)(message)
    while True:
        described = await admin.describe_topics([name])
        found = [p for p in described[0]["partitions"] if p["leader"] >= 0]
        if described[0]["error_code"] == 0 and found:
            total = len(described[0]["partitions"])
            if len(found) == total:
                return TopicInfo(name, total, created)
        await asyncio.sleep(0.1)
