"""When periodic work falls due on the wall clock.

The map stage's flush and the reduce tick share these beats: each pod's flush
that closes a second starts as the second ends (not at a phase set by when the
pod started), and the leader ticks a fixed delay later, once those flushes have
had time to land (docs/architecture.md, "Latency").
"""

from __future__ import annotations

import math


def next_beat(now: float, period: float, offset: float = 0.0) -> float:
    """The first time strictly after ``now`` that lies ``offset`` past a whole
    multiple of ``period`` (epoch seconds; ``0 <= offset < period``)."""
    if period <= 0:
        raise ValueError(f"period must be positive, got {period}")
    return math.floor((now - offset) / period) * period + offset + period
