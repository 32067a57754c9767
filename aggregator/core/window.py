"""The rolling window: partials in, a snapshot's numbers out, incrementally.

Feed it the full state of stored partials as they change (``apply``) and move it
with time (``advance``).  Every tick costs what changed, not the window size:

* invertible parts (counts, value sums, histograms, drop counts) are running sums:
  a changed partial adds its new state and subtracts its previous one; a bucket
  leaving the window subtracts its partials;
* min, max and distinct registers are ``SlidingMax`` structures tagged with the
  bucket: folding a grown partial again is harmless and expiry is free.

A partial of a bucket at or after the window's end (the bucket still filling) is
held back until the window reaches it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from aggregator.core import quantiles
from aggregator.core.buckets import WindowRange, bucket_of, validate_geometry
from aggregator.core.distinct import SlidingMax, SlidingRegisters
from aggregator.core.partial import Partial


@dataclass(slots=True)
class KeyTotals:
    """One key's window: running count and histogram, sliding distinct registers."""

    count: int = 0
    hist: quantiles.Histogram = field(default_factory=dict)
    regs: SlidingRegisters = field(default_factory=SlidingRegisters)


class RollingWindow:
    def __init__(self, dimensions: int, window_seconds: int, bucket_seconds: int) -> None:
        validate_geometry(window_seconds, bucket_seconds)
        self.dimensions = dimensions
        self.window_seconds = window_seconds
        self.bucket_seconds = bucket_seconds
        self.range: WindowRange | None = None
        self._entries: dict[Hashable, Partial] = {}
        self._by_bucket: dict[int, set[Hashable]] = {}
        self.count = 0
        self.vcount = 0
        self.vsum = 0.0
        self.hist: quantiles.Histogram = {}
        self.dropped: dict[str, int] = {}
        self.series: dict[int, int] = {}
        self.keys: tuple[dict[str, KeyTotals], ...] = tuple({} for _ in range(dimensions))
        self._max = SlidingMax()
        self._neg_min = SlidingMax()
        self._regs = SlidingRegisters()

    # -- input -------------------------------------------------------------

    def apply(self, entry: Hashable, partial: Partial) -> None:
        """The stored partial ``entry`` now has this full state."""
        window = self.range
        bucket = partial.bucket
        if window is not None and bucket < window.start:
            self._forget(entry)
            return
        previous = self._entries.get(entry)
        self._entries[entry] = partial
        self._by_bucket.setdefault(bucket, set()).add(entry)
        if previous is not None and previous.bucket != bucket:
            raise ValueError(f"entry {entry!r} moved from bucket {previous.bucket} to {bucket}")
        if window is not None and bucket < window.end:
            self._account(partial, +1)
            if previous is not None:
                self._account(previous, -1)

    def advance(self, at: float) -> WindowRange:
        """Move the window to end at ``at`` rounded down to a bucket; never backwards."""
        end = bucket_of(at, self.bucket_seconds)
        old = self.range
        if old is not None and end <= old.end:
            return old
        new = WindowRange(end - self.window_seconds, end, self.bucket_seconds)
        for bucket in self._buckets_between(old.start if old else None, new.start):
            active = old is not None and bucket < old.end
            for entry in self._by_bucket.pop(bucket, set()):
                partial = self._entries.pop(entry)
                if active:
                    self._account(partial, -1)
        for bucket in self._buckets_between(old.end if old else None, new.end):
            if bucket >= new.start:
                for entry in self._by_bucket.get(bucket, ()):
                    self._account(self._entries[entry], +1)
        self.range = new
        return new

    # -- queries -----------------------------------------------------------

    def distinct(self) -> int:
        return self._regs.estimate_since(self._start())

    def value_max(self) -> float | None:
        return self._max.max_since(self._start())

    def value_min(self) -> float | None:
        negated = self._neg_min.max_since(self._start())
        return None if negated is None else -negated

    def key_distinct(self, dim: int, key: str) -> int:
        totals = self.keys[dim].get(key)
        return 0 if totals is None else totals.regs.estimate_since(self._start())

    def entries(self) -> int:
        return len(self._entries)

    # -- internals ---------------------------------------------------------

    def _start(self) -> int:
        if self.range is None:
            raise RuntimeError("the window has not been advanced yet")
        return self.range.start

    def _buckets_between(self, low: int | None, high: int) -> list[int]:
        """Tracked buckets in [low, high); all tracked below ``high`` when low is None."""
        if low is None or (high - low) // self.bucket_seconds > len(self._by_bucket):
            return sorted(b for b in self._by_bucket if (low is None or b >= low) and b < high)
        return [b for b in range(low, high, self.bucket_seconds) if b in self._by_bucket]

    def _forget(self, entry: Hashable) -> None:
        partial = self._entries.pop(entry, None)
        if partial is not None:
            self._by_bucket.get(partial.bucket, set()).discard(entry)

    def _account(self, partial: Partial, sign: int) -> None:
        total = partial.total
        bucket = partial.bucket
        self.count += sign * total.count
        self.vcount += sign * total.vcount
        self.vsum += sign * total.vsum
        quantiles.add_into(self.hist, total.hist, sign)
        series = self.series.get(bucket, 0) + sign * total.count
        if series:
            self.series[bucket] = series
        else:
            self.series.pop(bucket, None)
        for reason, dropped in partial.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + sign * dropped
        if sign > 0:
            if total.vcount:
                self._max.add(bucket, total.vmax)
                self._neg_min.add(bucket, -total.vmin)
            if total.regs:
                self._regs.add(bucket, total.regs)
        for dim_keys, totals_of in zip(partial.by, self.keys, strict=True):
            for key, agg in dim_keys.items():
                totals = totals_of.get(key)
                if totals is None:
                    totals = totals_of[key] = KeyTotals()
                totals.count += sign * agg.count
                quantiles.add_into(totals.hist, agg.hist, sign)
                if sign > 0 and agg.regs:
                    totals.regs.add(bucket, agg.regs)
                if totals.count == 0:
                    del totals_of[key]
