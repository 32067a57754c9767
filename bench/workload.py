"""Synthetic inputs shared by the benchmarks (seeded, so runs are comparable)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from aggregator.core.synthetic import CrashEventGenerator

BASE_TS = 1_763_798_400


def messages(count: int, *, seconds: int = 10, seed: int = 7) -> list[bytes]:
    generator = CrashEventGenerator(random.Random(seed), bad_fraction=0.0, apps=200)
    return [generator.message(BASE_TS + seconds * i / count) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Event:
    key: bytes
    """The event's app: the message key (the peer counts per key; we ignore it)."""
    ts_ms: int
    """Event time in epoch milliseconds (also the record's Kafka timestamp)."""
    value: bytes


class EventPool:
    """Many events fast: a pool of generated events whose time is rewritten.

    The generator costs ~25 µs an event (weighted choice over 200 apps); a
    benchmark that produces a million events reuses ``size`` of them, cycling,
    with a new ``ts`` spliced in front (the generator writes ``ts`` first).
    """

    def __init__(self, size: int = 20_000, *, seed: int = 11, apps: int = 200) -> None:
        generator = CrashEventGenerator(random.Random(seed), bad_fraction=0.0, apps=apps)
        self._keys: list[bytes] = []
        self._tails: list[bytes] = []
        for message in (generator.message(BASE_TS) for _ in range(size)):
            head, _, tail = message.partition(b",")
            if not head.startswith(b'{"ts":'):
                raise ValueError(f"unexpected synthetic event layout: {message[:40]!r}")
            self._keys.append(str(orjson.loads(message)["app"]).encode())
            self._tails.append(tail)

    def event(self, index: int, ts_ms: int, app: bytes | None = None) -> Event:
        """The pool's event ``index`` (cycling) at ``ts_ms``; ``app`` replaces its app."""
        at = index % len(self._tails)
        seconds, millis = divmod(ts_ms, 1000)
        tail = self._tails[at]
        if app is not None:
            _, _, rest = tail.partition(b",")  # the generator writes app right after ts
            tail = b'"app":"%s",%s' % (app, rest)
        value = b'{"ts":%d.%03d,%s' % (seconds, millis, tail)
        return Event(self._keys[at] if app is None else app, ts_ms, value)

    def events(
        self, count: int, base_ms: int, spread_ms: int, *, distinct_apps: bool = False
    ) -> Iterator[Event]:
        """``count`` events whose times are scattered over ``[base_ms, base_ms +
        spread_ms)``: a fixed set of buckets, visited out of order (like devices'
        clocks), every one of them all along the stream.  ``distinct_apps``:
        every event has an app of its own (``key-<index>``), the highest
        cardinality a dimension can have."""
        stride = 7919  # a prime: consecutive events land far apart in the spread
        for index in range(count):
            app = b"key-%d" % index if distinct_apps else None
            yield self.event(index, base_ms + (index * stride) % spread_ms, app)
