"""How long a repeated step took, kept as a Prometheus histogram: cumulative counts
per upper bound, so /metrics of every pod can be summed and a quantile computed
across pods (a summary's quantiles cannot be aggregated)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

FLUSH_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Flush (store the partials, then commit): a few ms on a healthy store; the flush
interval (0.5 s) is the bound it must stay under, and the top buckets see store
timeouts."""

TICK_BOUNDS = (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Reduce tick: about 10 ms measured, p99 target 50 ms (docs/benchmarks.md); the
tick interval (1 s) is the bound past which snapshots arrive late."""


@dataclass
class Durations:
    bounds: tuple[float, ...]
    """Upper bounds (seconds, ascending); +Inf is implied."""
    counts: list[int] = field(init=False)
    """Observations per bucket (not cumulative); the last one is above every bound."""
    count: int = 0
    total_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total_seconds += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at or below it) per bound, ending with +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out
