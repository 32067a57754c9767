"""``Truth``: the brute-force answer over the messages read back from the topic.

Per (partition, bucket), per bucket, for the dead-letter topic and for a snapshot
whose window covers everything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregator.core.partial import Partial
from tests.support.oracle import brute_partial
from tests.support.readback import TopicMessage
from tests.support.stream import DIMENSIONS, ExpectedEvent, Planned


def _partial_of(
    bucket: int, events: list[ExpectedEvent], drops: Counter[str], offset: int
) -> Partial:
    partial = brute_partial(bucket, events, len(DIMENSIONS))
    partial.dropped = dict(drops)
    partial.offset = offset
    return partial


@dataclass
class Truth:
    """The messages of the topic, each with the outcome it must have."""

    valid: list[tuple[TopicMessage, ExpectedEvent]] = field(default_factory=list)
    rejected: list[tuple[TopicMessage, str]] = field(default_factory=list)

    @classmethod
    def of(cls, messages: Iterable[TopicMessage], plan: dict[bytes, Planned]) -> Truth:
        truth = cls()
        for message in messages:
            planned = plan.get(message.value)
            assert planned is not None, f"a message nobody planned: {message}"
            assert (message.partition, message.timestamp_ms) == (
                planned.partition,
                planned.timestamp_ms,
            ), (message, planned)
            if planned.event is not None:
                truth.valid.append((message, planned.event))
            else:
                assert planned.reason is not None
                truth.rejected.append((message, planned.reason))
        return truth

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)

    def events(self) -> list[ExpectedEvent]:
        return [event for _, event in self.valid]

    def cells(self) -> dict[tuple[int, int], Partial]:
        """The partial each (partition, bucket) must hold: valid events by event
        time, rejected messages by record time; offset the highest folded."""
        events: dict[tuple[int, int], list[ExpectedEvent]] = defaultdict(list)
        drops: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        offsets: dict[tuple[int, int], int] = defaultdict(lambda: -1)
        for message, event in self.valid:
            cell = (message.partition, event.bucket)
            events[cell].append(event)
            offsets[cell] = max(offsets[cell], message.offset)
        for message, reason in self.rejected:
            cell = (message.partition, message.timestamp_ms // 1000)
            drops[cell][reason] += 1
            offsets[cell] = max(offsets[cell], message.offset)
        return {
            cell: _partial_of(cell[1], events[cell], drops[cell], offsets[cell]) for cell in offsets
        }

    def buckets(self) -> dict[int, Partial]:
        """The merge of every partition's partial of each bucket (offset not compared)."""
        events: dict[int, list[ExpectedEvent]] = defaultdict(list)
        drops: dict[int, Counter[str]] = defaultdict(Counter)
        for _, event in self.valid:
            events[event.bucket].append(event)
        for message, reason in self.rejected:
            drops[message.timestamp_ms // 1000][reason] += 1
        return {
            bucket: _partial_of(bucket, events[bucket], drops[bucket], -1)
            for bucket in set(events) | set(drops)
        }
