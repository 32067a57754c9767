"""Where one batch's latency goes, seen from outside the pods.

``PartialWatcher`` is the benchmark's own Hazelcast client with an entry listener
on the pods' partials map, like the leader's: it writes down when each
(partition, bucket) partial landed and with what count, so a batch's journey
splits into

- *stored*: from the start of the send until the partials of its bucket add up
  to the batch (Kafka, the pods' fetch, the wait for their flush, the flush);
- *to tick*: from there to the ``generated_at`` of the first snapshot that shows
  the bucket complete (the wait for the leader's next tick, and the tick's read);
- *to client*: from ``generated_at`` to the websocket client (the rest of the
  tick, the publish, the topic, the hub, the websocket).

It also counts the Hazelcast calls the partial writes cost: a created entry is
one call (``put_if_absent``), an updated one two (``replace_if_same`` then
``set_ttl``); the leader adds two per snapshot (``set`` of the latest, the topic's
``publish``).  Failed compare-and-sets are not seen (none when one pod owns a
partition).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hazelcast.asyncio import HazelcastClient, Map

from aggregator.adapters.hazelcast.codec import Blob, decode_partial, parse_partial_key
from aggregator.adapters.hazelcast.connection import connect

CALLS_PER_CREATE = 1
CALLS_PER_UPDATE = 2
CALLS_PER_SNAPSHOT = 2


@dataclass
class Landing:
    at: float
    partition: int
    bucket: int
    count: int
    created: bool


@dataclass
class PartialWatcher:
    """Entry events of one partials map, timed on arrival (wall clock)."""

    landings: list[Landing] = field(default_factory=list)
    _client: HazelcastClient | None = None

    async def start(self, members: Sequence[str], cluster_name: str, map_name: str) -> None:
        self._client = await connect(members, cluster_name, client_name="bench-latency-watch")
        imap: Map[str, Blob] = await self._client.get_map(map_name)
        await imap.add_entry_listener(
            include_value=True, added_func=self._on_added, updated_func=self._on_updated
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.shutdown()
            self._client = None

    def _on_added(self, event: object) -> None:
        self._land(event, created=True)

    def _on_updated(self, event: object) -> None:
        self._land(event, created=False)

    def _land(self, event: object, *, created: bool) -> None:
        at = time.time()
        key = parse_partial_key(str(getattr(event, "key", "")))
        value = getattr(event, "value", None)
        if key is None or not isinstance(value, (bytes, bytearray)):
            return
        partial = decode_partial(value)
        self.landings.append(Landing(at, key.partition, key.bucket, partial.total.count, created))

    def write_calls(self, start: float, end: float) -> int:
        """Hazelcast calls of the partial writes that landed in [start, end)."""
        return sum(
            CALLS_PER_CREATE if x.created else CALLS_PER_UPDATE
            for x in self.landings
            if start <= x.at < end
        )

    def stored_at(self) -> dict[int, float]:
        """Per bucket, when its partials (latest per partition) added up to their most."""
        latest: dict[int, dict[int, int]] = {}
        best: dict[int, tuple[int, float]] = {}
        for landing in sorted(self.landings, key=lambda x: x.at):
            counts = latest.setdefault(landing.bucket, {})
            counts[landing.partition] = landing.count
            total = sum(counts.values())
            if total > best.get(landing.bucket, (-1, 0.0))[0]:
                best[landing.bucket] = (total, landing.at)
        return {bucket: at for bucket, (_, at) in best.items()}


@dataclass(frozen=True)
class Journey:
    """One (batch, client) sample, split; seconds from the start of the send."""

    phase: float
    """Where in its second the batch was sent."""
    stored: float
    generated: float
    arrived: float

    @property
    def to_tick(self) -> float:
        return self.generated - self.stored

    @property
    def to_client(self) -> float:
        return self.arrived - self.generated

    @property
    def second_left(self) -> float:
        """The rest of its second after the send began: no snapshot can show the
        batch sooner (a snapshot covers complete seconds only)."""
        return 1.0 - self.phase

    @property
    def landed_after_second(self) -> float:
        """How long after its second ended its bucket was stored (negative: stored
        complete before the second ended, by a flush on the half second)."""
        return self.stored - self.second_left

    @property
    def tick_after_second(self) -> float:
        """How long after its second ended the tick that showed it ran."""
        return self.generated - self.second_left


def quantile(values: Sequence[float], q: float) -> float:
    """The value at rank ``int(q * n)`` of the sorted values (NaN for none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def describe(journeys: Sequence[Journey], top: int = 3) -> list[str]:
    """Lines: p50/p99 of each part, then the slowest samples, part by part."""
    if not journeys:
        return ["  no sample to split"]
    parts = {
        "stored (send, fetch, wait for the flush, flush)": [j.stored for j in journeys],
        "to tick (wait for the next tick, its read)": [j.to_tick for j in journeys],
        "to client (tick, publish, topic, hub, websocket)": [j.to_client for j in journeys],
    }
    parts |= {
        "after its second, stored": [j.landed_after_second for j in journeys],
        "after its second, the tick that showed it": [j.tick_after_second for j in journeys],
    }
    lines = [
        f"  {name}: p50 {statistics.median(v):.3f} s, p99 {quantile(v, 0.99):.3f} s"
        for name, v in parts.items()
    ]
    first = min(journeys, key=lambda j: j.phase)
    lines.append(
        f"  floor: the batch sent earliest in its second ({first.phase:.1%} in) has "
        f"{first.second_left:.3f} s of it left, then the tick after the second "
        f"({first.tick_after_second:.3f} s) and the delivery ({first.to_client:.3f} s)"
    )
    lines.append(f"  slowest {top} (phase: stored + to tick + to client = latency):")
    for j in sorted(journeys, key=lambda j: j.arrived, reverse=True)[:top]:
        lines.append(
            f"    {j.phase:.3f}: {j.stored:.3f} + {j.to_tick:.3f} + {j.to_client:.3f} "
            f"= {j.arrived:.3f} s"
        )
    return lines
