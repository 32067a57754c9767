"""When periodic work falls due on the wall clock: the reduce tick and the map
stage's flush share these beats, so a flush lands just before the tick that
needs it instead of at a phase set by when the pod started."""

from __future__ import annotations

import math


def next_beat(now: float, period: float, offset: float = 0.0) -> float:
    """The first time strictly after ``now`` that lies ``offset`` past a whole
    multiple of ``period`` (epoch seconds; ``0 <= offset < period``)."""
    if period <= 0:
        raise ValueError(f"period must be positive, got {period}")
    return math.floor((now - offset) / period) * period + offset + period
