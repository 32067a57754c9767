"""The offline oracle: a snapshot of a finite sequence of messages at a given time.

Every message counts whatever its order (no lateness judgement); events outside
the window are valid but not shown; rejected messages are counted over the whole
input.  Memory is bounded by the window's buckets and keys, not the input size:
the buffer is rolled up every ``ROLL_UP_EVERY`` messages.
"""

from __future__ import annotations

from collections.abc import Iterable

from aggregator.core.accumulate import PartitionState
from aggregator.core.buckets import bucket_of, window_at
from aggregator.core.decode import Decoder
from aggregator.core.events import Event, EventSchema
from aggregator.core.snapshot import build_snapshot
from aggregator.core.types import JSONObject
from aggregator.core.window import RollingWindow

ROLL_UP_EVERY = 50_000


def replay(
    messages: Iterable[bytes],
    *,
    at: float,
    schema: EventSchema,
    window_seconds: int,
    bucket_seconds: int,
    top_n: int,
) -> JSONObject:
    span = window_at(at, window_seconds, bucket_seconds)
    decoder = Decoder(schema)
    state = PartitionState(len(schema.dimensions))
    rejected: dict[str, int] = {}
    for offset, message in enumerate(messages):
        event = decoder.decode(message)
        if type(event) is not Event:
            reason = str(event)
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        bucket = bucket_of(event.ts, bucket_seconds)
        if span.contains(bucket):
            state.add_event(bucket, offset, event)
        if offset % ROLL_UP_EVERY == ROLL_UP_EVERY - 1:
            state.roll_up()
    window = RollingWindow(len(schema.dimensions), window_seconds, bucket_seconds)
    for partial in state.roll_up():
        window.apply(partial.bucket, partial)
    window.advance(at)
    return build_snapshot(window, schema.dimensions, top_n, rejected=rejected)
