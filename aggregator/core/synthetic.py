"""Synthetic crash events: skewed keys, log-normal durations, some malformed input.

Deterministic for a given ``random.Random``; it remembers how many valid events it
made per bucket so a test can compare the dashboard with what was generated.
"""

from __future__ import annotations

import random
from collections import Counter

import orjson

from aggregator.core.events import EventSchema

PLATFORMS = ("android", "ios", "web", "macos", "windows")
CRASH_TYPES = ("anr", "oom", "null_pointer", "sigsegv", "sigabrt", "unhandled_promise")
MALFORMED_KINDS = ("invalid_json", "not_object", "missing_ts", "invalid_ts", "invalid_field")


class CrashEventGenerator:
    def __init__(
        self,
        rng: random.Random,
        schema: EventSchema | None = None,
        *,
        apps: int = 40,
        devices: int = 50_000,
        bad_fraction: float = 0.01,
        skew: float = 1.3,
    ) -> None:
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad fraction must be between 0 and 1")
        self.rng = rng
        self.schema = schema or EventSchema()
        self.bad_fraction = bad_fraction
        self._apps = [f"app-{i:03d}" for i in range(apps)]
        weights = [1.0 / (rank + 1) ** skew for rank in range(apps)]
        self._app_weights = [w / sum(weights) for w in weights]
        self._devices = devices
        self.valid: Counter[int] = Counter()
        """Valid events generated per whole second of event time."""
        self.malformed: Counter[str] = Counter()

    def message(self, ts: float) -> bytes:
        rng = self.rng
        if self.bad_fraction and rng.random() < self.bad_fraction:
            return self._malformed(ts)
        schema = self.schema
        dims = schema.dimensions
        values: list[str] = [
            rng.choices(self._apps, self._app_weights)[0],
            rng.choice(PLATFORMS),
            rng.choice(CRASH_TYPES),
        ]
        event: dict[str, object] = {schema.time_field: round(ts, 3)}
        for i, dim in enumerate(dims):
            event[dim] = values[i] if i < len(values) else f"{dim}-{rng.randrange(5)}"
        event[schema.value_field] = round(rng.lognormvariate(5.0, 0.9), 2)
        event[schema.distinct_field] = f"device-{int(rng.paretovariate(1.1) * 97) % self._devices}"
        self.valid[int(ts // 1)] += 1
        return orjson.dumps(event)

    def _malformed(self, ts: float) -> bytes:
        kind = self.rng.choice(MALFORMED_KINDS)
        self.malformed[kind] += 1
        time_field = self.schema.time_field
        if kind == "invalid_json":
            return b'{"ts": 17' + bytes([0xFF]) + b"}"
        if kind == "not_object":
            return orjson.dumps([time_field, ts])
        if kind == "missing_ts":
            return orjson.dumps({self.schema.dimensions[0]: "app-000"})
        if kind == "invalid_ts":
            return orjson.dumps({time_field: "yesterday"})
        return orjson.dumps({time_field: ts, self.schema.value_field: "slow"})

    def valid_between(self, start: int, end: int) -> int:
        """Valid events generated with event time in [start, end)."""
        return sum(count for second, count in self.valid.items() if start <= second < end)
