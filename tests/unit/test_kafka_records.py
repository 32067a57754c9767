"""aiokafka's ConsumerRecord to our KafkaRecord: seconds, empty values, key, headers."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from aggregator.adapters.kafka.records import KafkaRecord, to_records


def consumer_record(
    offset: int, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="events",
        partition=3,
        offset=offset,
        timestamp=1_700_000_000_123,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def test_a_batch_converts_in_order_with_seconds_key_and_headers() -> None:
    batch = [
        consumer_record(10, b'{"ts": 1}', b"device-1", [("trace", b"abc")]),
        consumer_record(11, None, None, []),
    ]
    assert to_records(3, batch) == [
        KafkaRecord(3, 10, 1_700_000_000.123, b'{"ts": 1}', b"device-1", (("trace", b"abc"),)),
        KafkaRecord(3, 11, 1_700_000_000.123, b"", None, ()),
    ]


def test_records_do_not_share_the_consumer_s_header_list() -> None:
    headers = [("trace", b"abc")]
    (record,) = to_records(0, [consumer_record(0, b"{}", None, headers)])
    headers.append(("later", b"x"))
    assert isinstance(record, KafkaRecord)
    assert isinstance(record.headers, tuple)
    assert record.headers == (("trace", b"abc"),)
