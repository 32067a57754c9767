"""The load generator behind ``aggregator produce``: synthetic crash events at a
steady rate into a topic, created when missing.

Valid events are keyed by their device id (one device's crashes stay in order on
one partition); malformed ones have no key.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from aggregator.adapters.kafka.errors import unavailable
from aggregator.adapters.kafka.options import KafkaOptions
from aggregator.adapters.kafka.topics import ensure_topic
from aggregator.core.events import EventSchema
from aggregator.core.synthetic import CrashEventGenerator

IN_FLIGHT = 10_000
"""Wait for deliveries after this many sends, so memory stays flat on long runs."""


@dataclass(frozen=True, slots=True)
class ProduceReport:
    topic: str
    partitions: int
    created_topic: bool
    valid: int
    malformed: dict[str, int] = field(default_factory=dict)
    """Malformed messages per reject reason (``Reject`` values)."""
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return self.valid + sum(self.malformed.values())

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        topic = f"{self.topic} ({self.partitions} partitions"
        topic += ", created)" if self.created_topic else ")"
        bad = sum(self.malformed.values())
        line = (
            f"produced {self.sent} messages to {topic} in {self.elapsed_s:.1f} s "
            f"({self.rate:.0f}/s): {self.valid} valid, {bad} malformed"
        )
        if bad:
            line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.malformed.items())) + ")"
        return line


async def produce_synthetic(
    bootstrap: str,
    topic: str,
    rate: float,
    duration_s: float,
    bad_fraction: float = 0.01,
    seed: int | None = None,
    *,
    partitions: int = 6,
    replication_factor: int | None = None,
    schema: EventSchema | None = None,
    options: KafkaOptions | None = None,
    client_id: str = "stream-aggregator-produce",
) -> ProduceReport:
    """Send ``round(rate * duration_s)`` messages paced evenly over ``duration_s``
    (as fast as the client goes when it cannot keep up), each stamped with the
    current time, and wait until all are delivered.  Kafka failures raise
    ``SourceUnavailable``; invalid arguments ``ValueError``."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    schema = schema or EventSchema()
    generator = CrashEventGenerator(random.Random(seed), schema, bad_fraction=bad_fraction)
    options = options or KafkaOptions()
    info = await ensure_topic(
        bootstrap,
        topic,
        partitions=partitions,
        replication_factor=replication_factor,
        options=options,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        **options.client_kwargs(),
    )
    total = round(rate * duration_s)
    with unavailable(bootstrap, f"produce to topic {topic!r}"):
        await producer.start()
        try:
            elapsed = await _paced(producer, generator, topic, rate, total)
        finally:
            await producer.stop()
    return ProduceReport(
        topic=topic,
        partitions=info.partitions,
        created_topic=info.created,
        valid=total - generator.malformed.total(),
        malformed=dict(generator.malformed),
        elapsed_s=elapsed,
    )


async def _paced(
    producer: AIOKafkaProducer, generator: CrashEventGenerator, topic: str, rate: float, total: int
) -> float:
    loop = asyncio.get_running_loop()
    distinct = generator.schema.distinct_field
    pending: list[asyncio.Future[Any]] = []
    started = loop.time()
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - started) * rate) + 1)
        while sent < due:
            bad_before = generator.malformed.total()
            value = generator.message(time.time())
            key = None if generator.malformed.total() != bad_before else _key(value, distinct)
            pending.append(await producer.send(topic, value, key=key))
            sent += 1
        if len(pending) >= IN_FLIGHT:
            await asyncio.gather(*pending)
            pending.clear()
        if sent < total:
            await asyncio.sleep(max(0.0, sent / rate - (loop.time() - started)))
    await asyncio.gather(*pending)
    return loop.time() - started


def _key(value: bytes, distinct_field: str) -> bytes | None:
    device = orjson.loads(value).get(distinct_field)
    return device.encode() if isinstance(device, str) else None
