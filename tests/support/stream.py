"""The exactness scenarios' stream: seeded messages, each with the outcome it must have.

``StreamMaker`` makes a seeded stream of messages, each unique (it carries a
``seq`` field, which the decoder ignores), each with the outcome the decoding
rules give it: a valid event of many shapes (epoch or RFC 3339 time, absent or
null dimensions, no value, no device, extra fields), or a malformed message of
every rejection kind (``invalid_json``, ``not_object``, ``missing_ts``,
``invalid_ts``, ``invalid_field``, ``too_large``).  The expected outcome is
decided here, by construction, never by the decoder under test
(tests/unit/test_exactness_plan.py holds the two equal).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

DIMENSIONS = ("app", "platform", "crash_type")
APPS = tuple(f"app-{i:02d}" for i in range(12))
PLATFORMS = ("android", "ios", "web", "macos", "windows")
CRASH_TYPES = ("anr", "oom", "null_pointer", "sigsegv", "sigabrt", "unhandled_promise")
UNKNOWN = "unknown"
MAX_MESSAGE_BYTES = 2048
TOP_N = 50
"""More than the keys of any dimension (12 apps + "unknown"): the snapshot shows all."""

REASONS = ("invalid_json", "not_object", "missing_ts", "invalid_ts", "invalid_field", "too_large")


def pod_environment(window_seconds: int) -> dict[str, str]:
    """The ``AGG_`` settings the exactness scenarios run their pods with."""
    return {
        "AGG_WINDOW_SECONDS": str(window_seconds),
        "AGG_TOP_N": str(TOP_N),
        "AGG_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "AGG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
    }


@dataclass(frozen=True)
class ExpectedEvent:
    """What a valid message must count as (the decoding rules, applied by hand)."""

    ts_ms: int
    keys: tuple[str, ...]
    value: float | None
    distinct: str | None

    @property
    def bucket(self) -> int:
        return self.ts_ms // 1000


@dataclass(frozen=True)
class Planned:
    seq: int
    value: bytes
    partition: int
    timestamp_ms: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str | None
    """None for a valid event, else the rejection reason it must get."""
    event: ExpectedEvent | None


class StreamMaker:
    """Seeded messages; ``plan`` maps every value made to its expected outcome."""

    def __init__(self, seed: int, *, partitions: int = 6, bad_fraction: float = 0.08) -> None:
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.bad_fraction = bad_fraction
        self.plan: dict[bytes, Planned] = {}
        self._seq = 0

    def make(self, now: float) -> Planned:
        rng = self.rng
        self._seq += 1
        seq = self._seq
        ts_ms = round(now * 1000)
        event: ExpectedEvent | None = None
        if rng.random() < self.bad_fraction:
            reason = REASONS[seq % len(REASONS)]  # every kind, evenly
            value = self._malformed(reason, seq, ts_ms)
        else:
            reason = None
            value, event = self._valid(seq, ts_ms)
        key = f"k{seq}".encode() if rng.random() < 0.5 else None
        headers = (("trace", f"t{seq}".encode()),) if rng.random() < 0.3 else ()
        planned = Planned(
            seq, value, rng.randrange(self.partitions), ts_ms, key, headers, reason, event
        )
        if value in self.plan:
            raise AssertionError(f"message made twice: {value!r}")
        self.plan[value] = planned
        return planned

    def _valid(self, seq: int, ts_ms: int) -> tuple[bytes, ExpectedEvent]:
        rng = self.rng
        doc: dict[str, Any] = {"seq": seq, "ts": _time_field(rng, ts_ms)}
        keys = tuple(
            self._optional(doc, name, functools.partial(rng.choice, choices)) or UNKNOWN
            for name, choices in zip(DIMENSIONS, (APPS, PLATFORMS, CRASH_TYPES), strict=True)
        )
        value = self._optional(doc, "duration_ms", self._duration)
        device = self._optional(doc, "device_id", lambda: f"device-{rng.randrange(3000)}")
        if rng.random() < 0.1:
            doc["extra"] = {"build": seq % 7, "tags": ["a", "b"]}
        number = None if value is None else float(value)
        return json.dumps(doc).encode(), ExpectedEvent(ts_ms, keys, number, device)

    def _optional(self, doc: dict[str, Any], name: str, make: Callable[[], Any]) -> Any:
        """Leave the field out (5 %), make it null (3 %), or set it; its value or None."""
        shape = self.rng.random()
        if shape < 0.05:
            return None
        doc[name] = None if shape < 0.08 else make()
        return doc[name]

    def _duration(self) -> float | int:
        shape = self.rng.random()
        if shape < 0.03:
            return 0
        if shape < 0.15:
            return self.rng.randrange(1, 5000)
        return round(self.rng.lognormvariate(5.0, 0.9), 2)

    def _malformed(self, reason: str, seq: int, ts_ms: int) -> bytes:
        variant = self.rng.randrange(4)
        ts = ts_ms / 1000
        if reason == "invalid_json":
            return (
                b'{"seq": %d, "ts": 17\xff}' % seq,
                b'{"seq": %d, "ts": ' % seq,
                b'{"seq": %d, "ts": %.3f, "app": "\xc3\x28"}' % (seq, ts),
                b"crash %d" % seq,
            )[variant]
        if reason == "not_object":
            return (b"[%d, %.3f]" % (seq, ts), b'"crash %d"' % seq, b"%d" % seq, b"[[%d]]" % seq)[
                variant
            ]
        if reason == "missing_ts":
            return (
                b'{"seq": %d}' % seq,
                b'{"seq": %d, "app": "app-00"}' % seq,
                b'{"seq": %d, "time": %.3f}' % (seq, ts),
                b'{"seq": %d, "TS": %.3f}' % (seq, ts),
            )[variant]
        if reason == "invalid_ts":
            return (
                b'{"seq": %d, "ts": "yesterday"}' % seq,
                b'{"seq": %d, "ts": true}' % seq,
                b'{"seq": %d, "ts": 1e400, "app": "app-01"}' % seq,
                b'{"seq": %d, "ts": "2026-01-01T00:00:00"}' % seq,  # no zone
            )[variant]
        if reason == "invalid_field":
            return (
                b'{"seq": %d, "ts": %.3f, "duration_ms": "slow"}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "duration_ms": -1}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "app": 3}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "device_id": ["d"]}' % (seq, ts),
            )[variant]
        # too_large: otherwise a valid event
        head = b'{"seq": %d, "ts": %.3f, "app": "app-00", "pad": "' % (seq, ts)
        return head + b"x" * (MAX_MESSAGE_BYTES + variant * 100) + b'"}'


def _time_field(rng: random.Random, ts_ms: int) -> float | str:
    """Epoch seconds, or RFC 3339 in UTC or another zone; always the same instant."""
    shape = rng.random()
    if shape < 0.7:
        return ts_ms / 1000
    at = datetime.fromtimestamp(ts_ms / 1000, UTC)
    if shape < 0.85:
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(
        timespec="milliseconds"
    )
