"""When periodic work falls due on the wall clock.

The reduce tick and the map stage's flush share these beats, so the flush that
closes a second starts as the second ends instead of at a phase set by when the
pod started.  ``TickDelay`` says how long after the second the leader ticks: as
long as those closing flushes recently took to reach it, within bounds.
"""

from __future__ import annotations

import math
from collections import deque

DELAY_FLOOR_S = 0.01
"""The shortest delay: what the tick waited before it learned from the flushes."""
DELAY_MARGIN_S = 0.01
DELAY_HISTORY = 60
"""Seconds of landings the delay is learned from.  With the latest of the last
n, a second lands later than all of them about once in n + 1 (for landings
that vary at random): 60 keeps that under 2 %; a slow second holds the delay up
for a minute."""


def next_beat(now: float, period: float, offset: float = 0.0) -> float:
    """The first time strictly after ``now`` that lies ``offset`` past a whole
    multiple of ``period`` (epoch seconds; ``0 <= offset < period``)."""
    if period <= 0:
        raise ValueError(f"period must be positive, got {period}")
    return math.floor((now - offset) / period) * period + offset + period


class TickDelay:
    """The tick's delay after the second, learned from when the flushes that close
    a second land: the latest landing of the last minute, plus 10 ms,
    between ``DELAY_FLOOR_S`` and ``ceiling_s``.  It starts at the ceiling.  The
    latest, not a percentile: a landing after the tick costs its second a whole
    tick, a longer delay costs every second only the difference."""

    def __init__(self, ceiling_s: float) -> None:
        if ceiling_s < 0:
            raise ValueError(f"the delay's ceiling cannot be negative, got {ceiling_s}")
        self.ceiling_s = ceiling_s
        self._floor_s = min(DELAY_FLOOR_S, ceiling_s)
        self._landings: deque[float] = deque(maxlen=DELAY_HISTORY)

    def observe(self, latest_landing_s: float | None) -> None:
        """How long after the second its closing flushes' last write landed (None:
        no write closed a bucket at this second)."""
        if latest_landing_s is not None:
            self._landings.append(latest_landing_s)

    def current(self) -> float:
        if not self._landings:
            return self.ceiling_s
        learned = max(self._landings) + DELAY_MARGIN_S
        return min(self.ceiling_s, max(self._floor_s, learned))
