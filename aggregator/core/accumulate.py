"""Map-side state: partials per (partition, bucket), with a buffer for the hot path.

Folding an event only files its value and device under its combination of keys
(see ``combos``); ``roll_up`` turns the buffer into the per-dimension ``Partial``
of each touched bucket, which is what gets stored.

Idempotent replay: each stored partial carries the highest source offset folded
into it, and every message goes to exactly one partial, chosen from its content
and record timestamp alone.  A message whose offset is at or below its partial's
offset is already counted and is skipped.

Deltas, not full partials: a ``PartitionState`` keeps, per bucket, only what was
folded since the last successful write (``stored``), with the bucket's highest
offset ever folded or loaded (the skip rule).  The store adds each delta to what
it holds, so the work of a flush follows what arrived since the previous one,
not the size of the bucket's partial (at a million keys a bucket's partial is
megabytes, and rewriting it every 0.5 s made the map stage quadratic).  A delta
is not idempotent, so a write whose outcome is unknown must be followed by a
reload (the map stage's resync), never by writing the same delta again.

Lateness is judged against the time the message entered the log (its record
timestamp), not the clock of whoever processes it: a replay after a crash then
classifies every message exactly as the first pass did, which the deduplication
relies on, and a consumer that lags does not turn on-time events into late ones.

The fold step, and why it is written three times
-------------------------------------------------
Folding a valid, timely event is two rules: the skip rule (``PartitionState.counted``:
its partial already holds its offset) and the filing (``PartitionState.add_event``:
its value and device go under its key combination in its bucket's buffer, the
offset is noted, and the buffer is merged at ``BUFFER_LIMIT``).  They exist

* as those two methods: the reference, one call per event, which ``_drop``, the
  replay oracle (``replay.py``, which never skips) and the property tests use;
* inline in ``MapFolder.fold_python``, the map stage's loop without the C
  extension: a method call per event there costs about 70 ns of the loop's
  1.6 us per event (some 4 %), so the loop keeps its own copy with every lookup
  hoisted;
* in C, ``_native.fold_run``, the loop the map stage runs when it was built.

Nothing else may fold.  ``MapFolder.fold`` (one message) is ``fold_many`` of that
message, and drops go through ``_drop``.  The copies are held equal by tests:
``test_fold.py`` (``add_event`` against ``fold``, and every rule through
``fold``), ``test_fold_many.py`` (the batch loop against ``fold`` per message)
and ``test_native.py`` (``fold_run`` against ``fold_python``, bit for bit).
Change one, change all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, TypeVar

from aggregator.core import native
from aggregator.core.buckets import bucket_of
from aggregator.core.combos import Combo, add_combos
from aggregator.core.decode import DECODE_ERRORS, Decoder, epoch_seconds
from aggregator.core.events import UNKNOWN_KEY, Event, EventSchema, Reject, Timeliness
from aggregator.core.partial import Partial

SKIPPED = "skipped"
"""Outcome of a message that an earlier pass already counted."""

BUFFER_LIMIT = 65_536
"""Events a partition buffers before merging them into its partials on its own,
so memory stays bounded whatever the rate and the flush interval (a few MB)."""

Outcome = Reject | Timeliness | str | None
"""None: counted; a Reject or Timeliness: dropped for that reason; SKIPPED: replayed."""


class FoldInput(Protocol):
    """What ``MapFolder.fold_many`` reads of a record (a source's record type)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def value(self) -> bytes: ...


R = TypeVar("R", bound=FoldInput)


class _Message(NamedTuple):
    """One message handed to ``MapFolder.fold``."""

    partition: int
    offset: int
    timestamp: float
    value: bytes


_REASONS: dict[str, Reject | Timeliness] = {r.value: r for r in (*Reject, *Timeliness)}
_partition_of = attrgetter("partition")

BatchOutcome = tuple[int, int, list[tuple[R, str]]]
"""What ``MapFolder.fold_many`` did with a batch: counted, skipped, and each message
dropped with its reason (in order)."""


class PartitionState:
    """Partials of one source partition, and what is folded but not yet rolled up."""

    __slots__ = ("_drops", "buffer", "buffered", "dimensions", "dirty", "offsets", "partials")

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.partials: dict[int, Partial] = {}
        """Per bucket, what was folded since it was last stored, and in ``offset``
        the highest offset folded or loaded (the C fold reads it for the skip rule)."""
        self.dirty: set[int] = set()
        self.buffer: dict[int, dict[tuple[str, ...], Combo]] = {}
        """Per bucket, the events folded since the last roll-up, by key combination."""
        self.offsets: dict[int, int] = {}
        """Per bucket in the buffer (or with drops), the last offset folded."""
        self.buffered = 0
        """Events folded since the last roll-up (the buffer holds each one)."""
        self._drops: dict[int, dict[str, int]] = {}

    def load(self, partials: Iterable[Partial]) -> None:
        """Take the stored partials' offsets (their contents stay in the store:
        what is kept here is only what is folded from now on)."""
        for partial in partials:
            self.partials[partial.bucket] = Partial(partial.bucket, self.dimensions, partial.offset)

    def counted(self, bucket: int, offset: int) -> bool:
        partial = self.partials.get(bucket)
        return partial is not None and offset <= partial.offset

    def add_event(self, bucket: int, offset: int, event: Event) -> None:
        """Fold one counted event into ``bucket``: the reference fold step (see
        the module's docstring for its two fast copies)."""
        _, keys, value, device = event
        combos = self.buffer.get(bucket)
        if combos is None:
            combos = self.buffer[bucket] = {}
        combo = combos.get(keys)
        if combo is None:
            combos[keys] = [value, device]
        else:
            combo.append(value)
            combo.append(device)
        self.offsets[bucket] = offset
        self.buffered += 1
        if self.buffered >= BUFFER_LIMIT:
            self.merge_buffer()

    def add_drop(self, bucket: int, offset: int, reason: str) -> None:
        drops = self._drops.get(bucket)
        if drops is None:
            drops = self._drops[bucket] = {}
        drops[reason] = drops.get(reason, 0) + 1
        self.offsets[bucket] = offset

    def roll_up(self) -> list[Partial]:
        """Merge the buffer into the partials; return every partial not yet stored:
        per bucket, what was folded since it was last stored (a delta), with the
        bucket's highest offset."""
        self.merge_buffer()
        return [self.partials[bucket] for bucket in sorted(self.dirty)]

    def merge_buffer(self) -> None:
        """Merge the buffer into the partials (they become dirty: not yet stored)."""
        self.buffered = 0
        for bucket, offset in self.offsets.items():
            partial = self.partials.get(bucket)
            if partial is None:
                partial = self.partials[bucket] = Partial(bucket, self.dimensions)
            combos = self.buffer.pop(bucket, None)
            if combos:
                add_combos(partial, combos)
            for reason, count in self._drops.pop(bucket, {}).items():
                partial.dropped[reason] = partial.dropped.get(reason, 0) + count
            partial.offset = max(partial.offset, offset)
            self.dirty.add(bucket)
        self.offsets.clear()

    def stored(self, buckets: Iterable[int]) -> None:
        """The store added these buckets' partials as they are now: they start
        again empty, keeping their offsets."""
        partials = self.partials
        dimensions = self.dimensions
        for bucket in buckets:
            self.dirty.discard(bucket)
            partial = partials.get(bucket)
            if partial is not None:
                partials[bucket] = Partial(bucket, dimensions, partial.offset)

    def expire(self, before: int) -> None:
        """Forget partials of buckets older than ``before`` (they left retention)."""
        for bucket in [b for b in self.partials if b < before and b not in self.dirty]:
            del self.partials[bucket]

    def pending(self) -> bool:
        return bool(self.offsets or self.dirty)


@dataclass(frozen=True, slots=True)
class FoldSettings:
    schema: EventSchema
    bucket_seconds: int
    window_seconds: int
    grace_seconds: float
    future_seconds: float
    max_message_bytes: int

    @property
    def retention_seconds(self) -> float:
        """How long a bucket's partial is kept (the map stage's expiry and the
        store's TTL): the window, the grace for late events and a minute more."""
        return self.window_seconds + self.grace_seconds + 60


class MapFolder:
    """Decode, judge and fold messages of any number of partitions."""

    def __init__(self, settings: FoldSettings) -> None:
        self.settings = settings
        self.decoder = Decoder(settings.schema)
        self.partitions: dict[int, PartitionState] = {}
        self._dimensions = len(settings.schema.dimensions)
        # Read on every message: kept as plain attributes.
        self._read = self.decoder.read
        self._keys: Callable[[Any], Any] = self.decoder.keys  # the struct is untyped
        self._bucket_seconds = settings.bucket_seconds
        self._max_bytes = settings.max_message_bytes
        self._oldest = settings.window_seconds + settings.grace_seconds
        self._newest = settings.future_seconds
        self.fold_context = native.FoldContext(  # what the C fold reads of this folder
            read=self._read,
            fields=self.decoder.fields,
            unknown=UNKNOWN_KEY,
            epoch_seconds=epoch_seconds,
            oldest=self._oldest,
            newest=self._newest,
            bucket_seconds=self._bucket_seconds,
            max_bytes=self._max_bytes,
            limit=BUFFER_LIMIT,
        )

    def partition(self, partition: int) -> PartitionState:
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState(self._dimensions)
        return state

    def fold(self, partition: int, offset: int, arrived_at: float, message: bytes) -> Outcome:
        """Judge one message and fold it: ``fold_many`` of that message alone."""
        counted, skipped, dropped = self.fold_many(
            (_Message(partition, offset, arrived_at, message),), {}
        )
        if counted:
            return None
        if skipped:
            return SKIPPED
        return _REASONS[dropped[0][1]]

    def fold_many(self, records: Iterable[R], next_offsets: dict[int, int]) -> BatchOutcome[R]:
        """Judge and fold each record in turn, tallying the outcomes; ``next_offsets``
        gets, per partition seen, the offset after its last record.

        With the C extension built, each partition's run of records goes through
        ``_native.fold_run``, which folds what it can and stops at a record it
        leaves to ``fold_python`` (one to drop, or of a type it does not take)."""
        compiled = native.NATIVE
        if compiled is None:
            return self.fold_python(records, next_offsets)
        fold_run, context = compiled.fold_run, self.fold_context
        counted = skipped = 0
        dropped: list[tuple[R, str]] = []
        for partition, group in groupby(records, _partition_of):
            run = list(group)
            state = self.partitions.get(partition) or self.partition(partition)
            index, end = 0, len(run)
            while index < end:
                index, folded, replayed = fold_run(context, state, run, index)
                counted += folded
                skipped += replayed
                if state.buffered >= context.limit:
                    state.merge_buffer()
                elif index < end:
                    folded, replayed, rejected = self.fold_python(run[index : index + 1], {})
                    counted += folded
                    skipped += replayed
                    dropped.extend(rejected)
                    index += 1
            next_offsets[partition] = run[-1].offset + 1
        return counted, skipped, dropped

    def fold_python(self, records: Iterable[R], next_offsets: dict[int, int]) -> BatchOutcome[R]:
        """``fold_many`` in Python: each record in turn, in one loop (no call, no
        outcome per message; the fold step inline, see the module's docstring).
        The rules' reference for the C extension, and the fold without it."""
        counted = skipped = 0
        dropped: list[tuple[R, str]] = []
        read = self._read
        keys_of = self._keys
        max_bytes = self._max_bytes
        oldest = self._oldest
        newest = self._newest
        bs = self._bucket_seconds
        decode_errors = DECODE_ERRORS
        unknown = UNKNOWN_KEY
        limit = BUFFER_LIMIT
        partition = -1  # partitions are numbered from 0
        state = PartitionState(0)  # replaced at the first record
        partials: dict[int, Partial] = {}
        buffer: dict[int, dict[tuple[str, ...], Combo]] = {}
        offsets: dict[int, int] = {}
        last = -1
        reason: Reject | Timeliness
        for record in records:
            if record.partition != partition:
                if partition >= 0:
                    next_offsets[partition] = last + 1
                partition = record.partition
                state = self.partitions.get(partition) or self.partition(partition)
                partials = state.partials
                buffer = state.buffer
                offsets = state.offsets
            offset = last = record.offset
            message = record.value
            arrived_at = record.timestamp
            if len(message) > max_bytes:
                reason = Reject.TOO_LARGE
            else:
                try:
                    raw = read(message)
                except decode_errors as error:
                    reason = self.decoder.rejection(error)
                else:
                    ts = raw.ts
                    if type(ts) is not float:
                        ts = epoch_seconds(ts)
                    if ts is None:
                        reason = Reject.INVALID_TS
                    elif ts < arrived_at - oldest:
                        reason = Timeliness.LATE
                    elif ts > arrived_at + newest:
                        reason = Timeliness.FUTURE
                    else:
                        bucket = bucket_of(ts, bs)
                        partial = partials.get(bucket)
                        if partial is not None and offset <= partial.offset:
                            skipped += 1
                            continue
                        keys = keys_of(raw)
                        if None in keys:
                            keys = tuple(unknown if key is None else key for key in keys)
                        combos = buffer.get(bucket)
                        if combos is None:
                            combos = buffer[bucket] = {}
                        combo = combos.get(keys)
                        if combo is None:
                            combos[keys] = [raw.value, raw.device]
                        else:
                            combo.append(raw.value)
                            combo.append(raw.device)
                        offsets[bucket] = offset
                        counted += 1
                        state.buffered += 1
                        if state.buffered >= limit:
                            state.merge_buffer()
                        continue
            if self._drop(state, arrived_at, offset, reason) == SKIPPED:
                skipped += 1
            else:
                dropped.append((record, reason.value))
        if partition >= 0:
            next_offsets[partition] = last + 1
        return counted, skipped, dropped

    def _drop(
        self, state: PartitionState, arrived_at: float, offset: int, reason: Reject | Timeliness
    ) -> Outcome:
        bucket = bucket_of(arrived_at, self._bucket_seconds)
        if state.counted(bucket, offset):
            return SKIPPED
        state.add_drop(bucket, offset, reason.value)
        return reason
