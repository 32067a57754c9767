"""Decoded events and the reasons a message can be rejected."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Reject(StrEnum):
    """Why a message did not count.  Values appear in snapshots, metrics and DLQ headers."""

    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    MISSING_TS = "missing_ts"
    INVALID_TS = "invalid_ts"
    INVALID_FIELD = "invalid_field"
    TOO_LARGE = "too_large"


class Timeliness(StrEnum):
    """Valid events that still do not count, judged against the record's arrival time."""

    LATE = "late"
    FUTURE = "future"


UNKNOWN_KEY = "unknown"


@dataclass(frozen=True, slots=True)
class EventSchema:
    """Which JSON fields carry what."""

    dimensions: tuple[str, ...] = ("app", "platform", "crash_type")
    value_field: str = "duration_ms"
    distinct_field: str = "device_id"
    time_field: str = "ts"


class Event(NamedTuple):
    """One valid event: its time, one key per dimension, an optional value and device.

    A NamedTuple rather than a frozen dataclass: it is built once per message on
    the hot path, and tuple construction is several times cheaper.
    """

    ts: float
    keys: tuple[str, ...]
    value: float | None
    distinct: str | None
