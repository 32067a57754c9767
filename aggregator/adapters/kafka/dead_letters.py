"""``KafkaDeadLetters``: rejected messages, unchanged, on a dead-letter topic.

Each message keeps its value, key and headers and gains five UTF-8 headers:
``reason`` (a ``Reject``/``Timeliness`` value), ``source-topic``,
``source-partition``, ``source-offset`` and ``source-timestamp`` (the original's
epoch milliseconds).

Delivery is at-least-once: ``send`` and ``send_many`` return only when the broker
has every message (acks=all), and the map stage commits the source offsets after
that.  A crash between delivery and that commit replays the source and sends the
same messages again, so consumers of the dead-letter topic deduplicate on
(source-topic, source-partition, source-offset).

The producer is not idempotent, on purpose: aiokafka's idempotent producer never
recovers from a failed batch.  The batch's sequence numbers are spent, so every
later batch of that partition fails with OutOfOrderSequenceNumber for the rest of
the process; and a batch the broker refuses as too large, or one that expires
while a partition has no leader, is such a failure.  The map stage would then
retry the same dead letters at every flush and never store or commit again.
Without idempotence a retried batch may be written twice, which the
deduplication above already covers.

A message too large for the dead-letter topic (the broker refuses its batch, and
then the message alone) is replaced by an empty stub with a ``value-omitted``
header (the original size in bytes); its other headers still point at the
original in the source topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from aggregator.adapters.kafka.errors import unavailable
from aggregator.adapters.kafka.handshake import check_access
from aggregator.adapters.kafka.options import KafkaOptions
from aggregator.adapters.kafka.records import Headers, KafkaRecord
from aggregator.adapters.kafka.topics import ensure_topic
from aggregator.ports.source import SourceRecord

MIB = 1024 * 1024
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


def dead_letter_headers(record: SourceRecord, reason: str, source_topic: str) -> Headers:
    """The original headers, then ours."""
    original = record.headers if isinstance(record, KafkaRecord) else ()
    return (
        *original,
        ("reason", reason.encode()),
        ("source-topic", source_topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
        ("source-timestamp", str(round(record.timestamp * 1000)).encode()),
    )


class KafkaDeadLetters:
    """The ``DeadLetters`` port on an aiokafka producer (acks=all)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        source_topic: str,
        client_id: str = "stream-aggregator-dlq",
        options: KafkaOptions | None = None,
        create_partitions: int | None = 1,
        max_request_bytes: int = 16 * MIB,
        delivery_timeout_s: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        """``create_partitions``: create the topic with that many partitions when it
        is missing (None: it must exist)."""
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._source_topic = source_topic
        self._client_id = client_id
        self._options = options or KafkaOptions()
        self._create_partitions = create_partitions
        self._max_request_bytes = max_request_bytes
        self._delivery_timeout_s = delivery_timeout_s
        self._log = logger or logging.getLogger("aggregator.kafka.dlq")
        self._producer: AIOKafkaProducer | None = None

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        """Create the topic if asked and missing, then connect; ``SourceUnavailable``
        (``SourceRefused`` for refused credentials) if that fails.  Again after a
        failure, nothing once started."""
        if self._producer is not None:
            return
        if self._create_partitions is None:
            await check_access(self._bootstrap, self._options, timeout_s=self._delivery_timeout_s)
        else:
            await ensure_topic(
                self._bootstrap,
                self._topic,
                partitions=self._create_partitions,
                options=self._options,
                timeout_s=self._delivery_timeout_s,
            )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=False,  # see the module doc
            # No linger: a lone send goes out at once; send_many still batches,
            # because it queues everything before the first batch leaves.
            linger_ms=0,
            max_request_size=self._max_request_bytes,
            request_timeout_ms=int(self._delivery_timeout_s * 1000),
            **self._options.client_kwargs(),
        )
        try:
            with unavailable(self._bootstrap, f"start producing to {self._topic!r}"):
                async with asyncio.timeout(self._delivery_timeout_s):
                    await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Deliver what is pending, then close."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with unavailable(self._bootstrap, f"flush the dead-letter topic {self._topic!r}"):
                await producer.stop()

    async def send(self, record: SourceRecord, reason: str) -> None:
        await self.send_many([(record, reason)])

    async def send_many(self, items: Iterable[tuple[SourceRecord, str]]) -> None:
        """Produce every item without waiting for each, then wait until all are
        delivered; raises ``SourceUnavailable`` if any is not."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("start() the dead-letter producer first")
        with unavailable(self._bootstrap, f"deliver to the dead-letter topic {self._topic!r}"):
            async with asyncio.timeout(self._delivery_timeout_s):
                pending = [
                    (record, reason, await self._produce(producer, record, reason))
                    for record, reason in items
                ]
                results = await asyncio.gather(*(f for *_, f in pending), return_exceptions=True)
                for (record, reason, _), result in zip(pending, results, strict=True):
                    if isinstance(result, TOO_LARGE):
                        await self._resend_alone(producer, record, reason)
                    elif isinstance(result, BaseException):
                        raise result

    async def _resend_alone(
        self, producer: AIOKafkaProducer, record: SourceRecord, reason: str
    ) -> None:
        """The broker refused the batch that held this message: it may fit on its
        own (the topic's limit applies to whole batches); if not, send a stub."""
        try:
            await (await self._produce(producer, record, reason))
        except TOO_LARGE:
            await (await self._produce_stub(producer, record, reason))

    async def _produce(
        self, producer: AIOKafkaProducer, record: SourceRecord, reason: str
    ) -> asyncio.Future[Any]:
        key = record.key if isinstance(record, KafkaRecord) else None
        headers = dead_letter_headers(record, reason, self._source_topic)
        try:
            future: asyncio.Future[Any] = await producer.send(
                self._topic, record.value, key=key, headers=list(headers)
            )
        except TOO_LARGE:
            return await self._produce_stub(producer, record, reason)
        return future

    async def _produce_stub(
        self, producer: AIOKafkaProducer, record: SourceRecord, reason: str
    ) -> asyncio.Future[Any]:
        self._log.warning(
            "dead letter from partition %d offset %d is too large (%d bytes); "
            "sending its headers without the value",
            record.partition,
            record.offset,
            len(record.value),
        )
        key = record.key if isinstance(record, KafkaRecord) else None
        headers = [
            *dead_letter_headers(record, reason, self._source_topic),
            ("value-omitted", str(len(record.value)).encode()),
        ]
        future: asyncio.Future[Any] = await producer.send(
            self._topic, b"", key=key, headers=headers
        )
        return future
