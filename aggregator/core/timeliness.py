"""Whether a valid event is too late or too far ahead to count.

Judged against the time the message entered the log (the record timestamp), not
against the clock of whoever processes it: a replay after a crash then classifies
every message exactly as the first pass did, which the offset-based deduplication
relies on, and a consumer that lags does not turn on-time events into late ones.
"""

from __future__ import annotations

from aggregator.core.events import Timeliness


def classify(
    event_ts: float,
    arrived_at: float,
    *,
    window_seconds: int,
    grace_seconds: float,
    future_seconds: float,
) -> Timeliness | None:
    if event_ts < arrived_at - window_seconds - grace_seconds:
        return Timeliness.LATE
    if event_ts > arrived_at + future_seconds:
        return Timeliness.FUTURE
    return None
