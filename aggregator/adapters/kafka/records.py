"""Our record type for Kafka messages; aiokafka's ``ConsumerRecord`` stops here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aggregator.ports.source import SourceRecord

Headers = tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class KafkaRecord(SourceRecord):
    """A ``SourceRecord`` that also keeps the message key and headers, so the dead
    letter topic can receive the message unchanged (not frozen, for speed, like
    ``SourceRecord``)."""

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
            b"" if message.value is None else message.value,
            message.key,
            tuple(message.headers),
        )
        for message in messages
    ]
