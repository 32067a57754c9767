"""Our record type for Kafka messages; aiokafka's ``ConsumerRecord`` stops here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggregator.ports.source import SourceRecord

Headers = tuple[tuple[str, bytes], ...]


class KafkaRecord(SourceRecord, gc=False):
    """A ``SourceRecord`` that also keeps the message key and headers, so the dead
    letter topic can receive the message unchanged (a Struct built in C, untracked
    by the garbage collector, like ``SourceRecord``)."""

    key: bytes | None = None
    headers: Headers = ()


def to_records(partition: int, messages: Sequence[Any]) -> list[SourceRecord]:
    """Convert one partition's ``ConsumerRecord`` batch (timestamps in ms)."""
    record = KafkaRecord
    return [
        record(
            partition,
            message.offset,
            message.timestamp / 1000,
            message.value or b"",  # None (a tombstone) as no bytes
            message.key,
            tuple(message.headers),
        )
        for message in messages
    ]
