"""Decoding: every rejection reason, and what valid messages become."""

from __future__ import annotations

import pytest

from aggregator.core.decode import Decoder, parse_timestamp
from aggregator.core.events import Event, EventSchema, Reject

DECODER = Decoder(EventSchema())


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"not json", Reject.INVALID_JSON),
        (b'{"ts": 1', Reject.INVALID_JSON),
        (b'{"ts": 1, "app": "\xff"}', Reject.INVALID_JSON),
        (b"", Reject.INVALID_JSON),
        (b"[1, 2]", Reject.NOT_OBJECT),
        (b'"text"', Reject.NOT_OBJECT),
        (b"42", Reject.NOT_OBJECT),
        (b"null", Reject.NOT_OBJECT),
        (b"{}", Reject.MISSING_TS),
        (b'{"app": "a"}', Reject.MISSING_TS),
        (b'{"ts": null}', Reject.INVALID_TS),
        (b'{"ts": true}', Reject.INVALID_TS),
        (b'{"ts": "yesterday"}', Reject.INVALID_TS),
        (b'{"ts": "2026-01-01T00:00:00"}', Reject.INVALID_TS),
        (b'{"ts": "2026-13-01T00:00:00Z"}', Reject.INVALID_TS),
        (b'{"ts": 1e400}', Reject.INVALID_TS),
        (b'{"ts": [1]}', Reject.INVALID_TS),
        (b'{"ts": 1, "app": 7}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "platform": ["ios"]}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "duration_ms": -0.5}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "duration_ms": "12"}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "duration_ms": true}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "duration_ms": 1e400}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "device_id": 12}', Reject.INVALID_FIELD),
        (b'{"ts": 1, "device_id": false}', Reject.INVALID_FIELD),
    ],
)
def test_rejections(message: bytes, reason: Reject) -> None:
    assert DECODER.decode(message) == reason


def test_valid_event_with_every_field() -> None:
    message = (
        b'{"ts": 1700000000.5, "app": "shop", "platform": "ios", "crash_type": "oom",'
        b' "duration_ms": 12, "device_id": "d1", "extra": {"ignored": [1, 2]}}'
    )
    assert DECODER.decode(message) == Event(1700000000.5, ("shop", "ios", "oom"), 12.0, "d1")


def test_missing_and_null_fields_default() -> None:
    event = DECODER.decode(b'{"ts": 5, "app": null, "duration_ms": null, "device_id": null}')
    assert event == Event(5.0, ("unknown", "unknown", "unknown"), None, None)


def test_empty_string_key_is_itself() -> None:
    event = DECODER.decode(b'{"ts": 5, "app": ""}')
    assert isinstance(event, Event)
    assert event.keys[0] == ""


def test_zero_value_counts() -> None:
    event = DECODER.decode(b'{"ts": 5, "duration_ms": 0}')
    assert isinstance(event, Event)
    assert event.value == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01t00:00:00z", 1767225600.0),
        ("2026-01-01 01:00:00+01:00", 1767225600.0),
        ("2026-01-01T00:00:00.250Z", 1767225600.25),
        ("2026-01-01T00:00:00.123456789Z", 1767225600.123456),
    ],
)
def test_rfc3339_times(text: str, expected: float) -> None:
    assert parse_timestamp(text) == pytest.approx(expected)
    event = DECODER.decode(f'{{"ts": "{text}"}}'.encode())
    assert isinstance(event, Event)
    assert event.ts == pytest.approx(expected)


def test_configured_field_names() -> None:
    decoder = Decoder(EventSchema(("region",), "latency", "user", "time"))
    assert decoder.decode(b'{"time": 3, "region": "eu", "latency": 2, "user": "u"}') == Event(
        3.0, ("eu",), 2.0, "u"
    )
    assert decoder.decode(b'{"ts": 3}') == Reject.MISSING_TS
    assert decoder.decode(b'{"time": "x"}') == Reject.INVALID_TS
    assert decoder.decode(b'{"time": 3, "region": 1}') == Reject.INVALID_FIELD


def test_deeply_nested_extra_field_is_rejected_not_crashing() -> None:
    deep = b'{"ts": 1, "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert DECODER.decode(deep) == Reject.INVALID_JSON
