"""The brute-force answer for a snapshot served by the deployment, from the topic itself.

Every message of the topic is read back from the broker and classified on its
own (too large, or the decoder's verdict: an event or a rejection reason); then
the counts a snapshot must show for its window are computed the obvious way:
valid events by event-time bucket, rejected messages by record time, per key of
each dimension.  Nothing here asks the aggregator anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from aggregator.core.decode import Decoder
from aggregator.core.events import Event, EventSchema
from tests.support.readback import TopicMessage as Message
from tests.support.readback import read_topic

__all__ = [
    "Classified",
    "Expected",
    "classify",
    "expected_for",
    "problems",
    "read_topic",
    "valid_per_bucket",
]

DIMENSIONS = ("app", "platform", "crash_type")
MAX_MESSAGE_BYTES = 65536  # the dev overlay's AGG_MAX_MESSAGE_BYTES

Classified = list[tuple[Message, Event | str]]
"""Each message of the topic with its verdict: the event, or why it is rejected."""


@dataclass(frozen=True)
class Expected:
    count: int
    series: dict[int, int]
    by: dict[str, Counter[str]]
    rejected: Counter[str]


def classify(messages: list[Message]) -> Classified:
    decoder = Decoder(EventSchema())
    classified: list[tuple[Message, Event | str]] = []
    for message in messages:
        if len(message.value) > MAX_MESSAGE_BYTES:
            classified.append((message, "too_large"))
            continue
        outcome = decoder.decode(message.value)
        classified.append((message, outcome if isinstance(outcome, Event) else str(outcome)))
    return classified


def valid_per_bucket(classified: Classified) -> Counter[int]:
    """Valid events per event-time bucket, over the whole topic: the most any
    snapshot may show for a bucket."""
    return Counter(int(outcome.ts // 1) for _, outcome in classified if isinstance(outcome, Event))


def expected_for(classified: Classified, start: int, end: int) -> Expected:
    series: Counter[int] = Counter()
    by: dict[str, Counter[str]] = {name: Counter() for name in DIMENSIONS}
    rejected: Counter[str] = Counter()
    for message, outcome in classified:
        if isinstance(outcome, Event):
            bucket = int(outcome.ts // 1)
            if start <= bucket < end:
                series[bucket] += 1
                for name, key in zip(DIMENSIONS, outcome.keys, strict=True):
                    by[name][key] += 1
        elif start <= message.timestamp_ms // 1000 < end:
            rejected[outcome] += 1
    return Expected(sum(series.values()), dict(series), by, rejected)


def problems(snapshot: dict[str, Any], expected: Expected) -> list[str]:
    """Every count of ``snapshot`` against the brute force: total, per bucket, per key, rejected."""
    found = []
    if snapshot["total"]["count"] != expected.count:
        found.append(f"total {snapshot['total']['count']}, expected {expected.count}")
    shown = {row["start"]: row["count"] for row in snapshot["series"]}
    for bucket in sorted(set(shown) | set(expected.series)):
        if shown.get(bucket, 0) != expected.series.get(bucket, 0):
            wanted = expected.series.get(bucket, 0)
            found.append(f"bucket {bucket}: {shown.get(bucket)}, expected {wanted}")
    for name in DIMENSIONS:
        rows = {row["key"]: row["count"] for row in snapshot["by"][name]}
        truth = expected.by[name]
        for key, count in rows.items():
            if truth.get(key, 0) != count:
                found.append(f"{name}={key}: {count}, expected {truth.get(key, 0)}")
        # the rows are the top keys: none left out may count more than one shown
        if rows:
            lowest = min(rows.values())
            missing = {k: c for k, c in truth.items() if k not in rows and c > lowest}
            if missing:
                found.append(f"{name}: keys {missing} count more than the shown minimum {lowest}")
    by_reason = {k: v for k, v in snapshot["rejected"]["by_reason"].items() if v}
    if by_reason != dict(expected.rejected):
        found.append(f"rejected {by_reason}, expected {dict(expected.rejected)}")
    return found
