"""Map-side state: partials per (partition, bucket), with a buffer for the hot path.

Events are first folded into one ``Agg`` per combination of keys (one update per
event instead of one per dimension); ``roll_up`` merges the buffer into the
per-dimension ``Partial`` of each touched bucket, which is what gets stored.

Idempotent replay: each stored partial carries the highest source offset folded
into it, and every message goes to exactly one partial, chosen from its content
and record timestamp alone.  A message whose offset is at or below its partial's
offset is already counted and is skipped.

Lateness is judged against the time the message entered the log (its record
timestamp), not the clock of whoever processes it: a replay after a crash then
classifies every message exactly as the first pass did, which the deduplication
relies on, and a consumer that lags does not turn on-time events into late ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aggregator.core import distinct, quantiles
from aggregator.core.decode import Decoder
from aggregator.core.events import Event, EventSchema, Reject, Timeliness
from aggregator.core.partial import Agg, Partial

_bin_of = quantiles.bin_of
_register_and_rank = distinct.register_and_rank

SKIPPED = "skipped"
"""Outcome of a message that an earlier pass already counted."""

Outcome = Reject | Timeliness | str | None
"""None: counted; a Reject or Timeliness: dropped for that reason; SKIPPED: replayed."""


class PartitionState:
    """Partials of one source partition, and what is folded but not yet rolled up."""

    __slots__ = ("_buffer", "_drops", "_offsets", "dimensions", "dirty", "partials")

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.partials: dict[int, Partial] = {}
        self.dirty: set[int] = set()
        self._buffer: dict[int, dict[tuple[str, ...], Agg]] = {}
        self._offsets: dict[int, int] = {}
        self._drops: dict[int, dict[str, int]] = {}

    def load(self, partials: Iterable[Partial]) -> None:
        for partial in partials:
            self.partials[partial.bucket] = partial

    def counted(self, bucket: int, offset: int) -> bool:
        partial = self.partials.get(bucket)
        return partial is not None and offset <= partial.offset

    def add_event(self, bucket: int, offset: int, event: Event) -> None:
        _, keys, value, device = event
        combos = self._buffer.get(bucket)
        if combos is None:
            combos = self._buffer[bucket] = {}
        agg = combos.get(keys)
        if agg is None:
            agg = combos[keys] = Agg()
        agg.count += 1
        if value is not None:
            agg.vcount += 1
            agg.vsum += value
            if value < agg.vmin:
                agg.vmin = value
            if value > agg.vmax:
                agg.vmax = value
            index = _bin_of(value)
            hist = agg.hist
            hist[index] = hist.get(index, 0) + 1
        if device is not None:
            register, rank = _register_and_rank(device)
            regs = agg.regs
            if rank > regs.get(register, 0):
                regs[register] = rank
        self._offsets[bucket] = offset

    def add_drop(self, bucket: int, offset: int, reason: str) -> None:
        drops = self._drops.get(bucket)
        if drops is None:
            drops = self._drops[bucket] = {}
        drops[reason] = drops.get(reason, 0) + 1
        self._offsets[bucket] = offset

    def roll_up(self) -> list[Partial]:
        """Merge the buffer into the partials; return every partial not yet stored."""
        for bucket, offset in self._offsets.items():
            partial = self.partials.get(bucket)
            if partial is None:
                partial = self.partials[bucket] = Partial(bucket, self.dimensions)
            for keys, agg in self._buffer.pop(bucket, {}).items():
                partial.total.merge_from(agg)
                for dim_keys, key in zip(partial.by, keys, strict=True):
                    own = dim_keys.get(key)
                    if own is None:
                        dim_keys[key] = agg if len(partial.by) == 1 else agg.copy()
                    else:
                        own.merge_from(agg)
            for reason, count in self._drops.pop(bucket, {}).items():
                partial.dropped[reason] = partial.dropped.get(reason, 0) + count
            partial.offset = max(partial.offset, offset)
            self.dirty.add(bucket)
        self._offsets.clear()
        return [self.partials[bucket] for bucket in sorted(self.dirty)]

    def stored(self, buckets: Iterable[int]) -> None:
        """The store holds these buckets' partials as they are now."""
        self.dirty.difference_update(buckets)

    def expire(self, before: int) -> None:
        """Forget partials of buckets older than ``before`` (they left retention)."""
        for bucket in [b for b in self.partials if b < before and b not in self.dirty]:
            del self.partials[bucket]

    def pending(self) -> bool:
        return bool(self._offsets or self.dirty)


@dataclass(frozen=True, slots=True)
class FoldSettings:
    schema: EventSchema
    bucket_seconds: int
    window_seconds: int
    grace_seconds: float
    future_seconds: float
    max_message_bytes: int


class MapFolder:
    """Decode, judge and fold messages of any number of partitions."""

    def __init__(self, settings: FoldSettings) -> None:
        self.settings = settings
        self.decoder = Decoder(settings.schema)
        self.partitions: dict[int, PartitionState] = {}
        self._dimensions = len(settings.schema.dimensions)
        # Read on every message: kept as plain attributes.
        self._decode = self.decoder.decode
        self._bucket_seconds = settings.bucket_seconds
        self._max_bytes = settings.max_message_bytes
        self._oldest = settings.window_seconds + settings.grace_seconds
        self._newest = settings.future_seconds

    def partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState(self._dimensions)
        return state

    def fold(self, partition: int, offset: int, arrived_at: float, message: bytes) -> Outcome:
        state = self.partitions.get(partition) or self.partition(partition)
        bs = self._bucket_seconds
        if len(message) > self._max_bytes:
            return self._drop(state, int(arrived_at // bs) * bs, offset, Reject.TOO_LARGE)
        event = self._decode(message)
        if type(event) is not Event:
            return self._drop(state, int(arrived_at // bs) * bs, offset, event)  # type: ignore[arg-type]
        ts = event.ts
        if ts < arrived_at - self._oldest:
            return self._drop(state, int(arrived_at // bs) * bs, offset, Timeliness.LATE)
        if ts > arrived_at + self._newest:
            return self._drop(state, int(arrived_at // bs) * bs, offset, Timeliness.FUTURE)
        bucket = int(ts // bs) * bs
        if state.counted(bucket, offset):
            return SKIPPED
        state.add_event(bucket, offset, event)
        return None

    @staticmethod
    def _drop(
        state: PartitionState, bucket: int, offset: int, reason: Reject | Timeliness
    ) -> Outcome:
        if state.counted(bucket, offset):
            return SKIPPED
        state.add_drop(bucket, offset, reason.value)
        return reason
