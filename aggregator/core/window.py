"""The rolling window: partials in, a snapshot's numbers out, incrementally.

Feed it the full state of stored partials as they change (``apply``) and move it
with time (``advance``).  Every tick costs what changed, not the window size:

* invertible parts (counts, value sums, histograms, drop counts) are running sums:
  a changed partial adds its new state and subtracts its previous one; a bucket
  leaving the window subtracts its partials;
* min, max and distinct registers are ``SlidingMax`` structures tagged with the
  bucket: folding a grown partial again is harmless and expiry is free;
* per key, only the count is kept for every key; a key's histogram and distinct
  registers are built from the stored partials the first time they are asked for
  (the snapshot asks for the top keys only) and kept up to date while they are
  asked for; the top keys are found among the keys whose count rose past a bar
  and a margin of runners-up (``TopKeys``), not by sorting every key each tick;
* the per-key counts are added and taken away in bulk (``key_counts``, in C when
  the extension is built): a bucket that leaves can carry a million keys.

A partial of a bucket at or after the window's end (the bucket still filling) is
held back until the window reaches it.

The window keeps a compact copy of each partial (counts, and references to the
histograms and registers), not the partial's ``Agg`` objects: those are many,
and a cyclic garbage collection pass costs what the heap holds.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from itertools import chain

from aggregator.core import quantiles
from aggregator.core.buckets import WindowRange, bucket_of, validate_geometry
from aggregator.core.distinct import SlidingMax, SlidingRegisters
from aggregator.core.key_counts import Bar, add_counts, ranks_at_or_above, take_counts
from aggregator.core.partial import Agg, Partial
from aggregator.core.types import FlatPairs

DETAIL_IDLE_ADVANCES = 60
"""A key's histogram and registers are dropped after this many advances unasked
(kept a while: a key at the edge of the top keys comes and goes)."""

DRAIN_KEYS = 5_000
"""A leaving partial with more keys than this in a dimension is taken from the
per-key counts over the next advances, at least this many keys an advance (and
at least 1/DRAIN_ADVANCES of all waiting), not in one: a bucket that carries a
million keys would otherwise cost its tick about 300 ms (measured on the
2-core machine of docs/benchmarks.md, in C).  Until then ``key_count``
subtracts what is still waiting, so every count it gives is exact."""
DRAIN_ADVANCES = 60


class _Stored:
    """What the window keeps of one applied partial: per key, its count and its
    histogram and registers as flat tuples of ints (after a collection pass the
    garbage collector tracks none of those dicts and tuples)."""

    __slots__ = ("bucket", "counts", "dropped", "hists", "regs", "total")

    def __init__(self, partial: Partial) -> None:
        self.bucket = partial.bucket
        self.total: Agg = partial.total
        self.dropped = partial.dropped
        self.counts = tuple({key: agg.count for key, agg in keys.items()} for keys in partial.by)
        self.hists: tuple[dict[str, FlatPairs], ...] = tuple(
            {key: _flat(agg.hist) for key, agg in keys.items() if agg.hist} for keys in partial.by
        )
        self.regs: tuple[dict[str, FlatPairs], ...] = tuple(
            {key: _flat(agg.regs) for key, agg in keys.items() if agg.regs} for keys in partial.by
        )


def _flat(mapping: Mapping[int, int]) -> FlatPairs:
    return tuple(chain.from_iterable(mapping.items()))


@dataclass(slots=True)
class KeyDetail:
    """A key's window histogram and sliding distinct registers."""

    hist: quantiles.Histogram = field(default_factory=dict)
    regs: SlidingRegisters = field(default_factory=SlidingRegisters)
    asked: int = 0
    """The advance count when it was last asked for."""


class TopKeys:
    """Exact top keys of one dimension by (count descending, key), kept cheaply.

    ``candidates`` holds exactly the keys that rank at or above ``bar`` by their
    current counts.  A key whose count went down cannot rise past the bar, so
    only the keys whose count went up need a look, and ``key_counts.add_counts``
    adds those that pass the bar to ``candidates`` as it adds; ``top`` drops the
    candidates that fell below it.  While at least ``n`` candidates remain, the
    top ``n`` are among them; otherwise (or when they grow too many) one full
    pass picks new candidates.
    """

    __slots__ = ("bar", "candidates")

    def __init__(self) -> None:
        self.candidates: set[str] = set()
        self.bar: Bar | None = None
        """None until the first full pass: nothing to note before it."""

    def top(
        self, count_of: Callable[[str], int], every: Callable[[], Mapping[str, int]], n: int
    ) -> list[str]:
        """The top ``n`` keys; ``count_of`` gives a key's count (0 for none),
        ``every`` all the counts (called only for a full pass)."""
        bar = self.bar
        candidates = self.candidates
        if bar is not None:
            fallen = [
                key
                for key in candidates
                if (count := count_of(key)) <= 0 or not ranks_at_or_above(count, key, bar)
            ]
            candidates.difference_update(fallen)
        margin = max(64, 8 * n)
        too_few = len(candidates) < n and bar is not None and bar != _EVERY
        if bar is None or too_few or len(candidates) > 4 * margin:
            counts = every()
            best = heapq.nsmallest(margin, ((-count, key) for key, count in counts.items()))
            self.bar = (-best[-1][0], best[-1][1]) if len(best) == margin else _EVERY
            candidates = self.candidates = {key for _, key in best}
        ranked = heapq.nsmallest(n, ((-count_of(key), key) for key in candidates))
        return [key for _, key in ranked]


_EVERY: Bar = (0, "")
"""A bar that every key (a positive count) passes: there are fewer keys than the margin."""


class RollingWindow:
    def __init__(self, dimensions: int, window_seconds: int, bucket_seconds: int) -> None:
        validate_geometry(window_seconds, bucket_seconds)
        self.dimensions = dimensions
        self.window_seconds = window_seconds
        self.bucket_seconds = bucket_seconds
        self.range: WindowRange | None = None
        self._entries: dict[Hashable, _Stored] = {}
        self._by_bucket: dict[int, set[Hashable]] = {}
        self.count = 0
        self.vcount = 0
        self.vsum = 0.0
        self.hist: quantiles.Histogram = {}
        self.dropped: dict[str, int] = {}
        self.series: dict[int, int] = {}
        self.key_counts: tuple[dict[str, int], ...] = tuple({} for _ in range(dimensions))
        """Per dimension, every key's count over the window, less what waits in
        ``_leaving`` (read a count with ``key_count``)."""
        self._leaving: tuple[deque[dict[str, int]], ...] = tuple(deque() for _ in range(dimensions))
        """Per dimension, the counts of left partials still to be taken away (DRAIN_KEYS)."""
        self._leaving_keys = 0
        self._details: tuple[dict[str, KeyDetail], ...] = tuple({} for _ in range(dimensions))
        self._tops = tuple(TopKeys() for _ in range(dimensions))
        self._advances = 0
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
        if previous is not None and previous.bucket != bucket:
            raise ValueError(f"entry {entry!r} moved from bucket {previous.bucket} to {bucket}")
        stored = self._entries[entry] = _Stored(partial)
        self._by_bucket.setdefault(bucket, set()).add(entry)
        if window is not None and bucket < window.end:
            self._account(stored, +1)
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
                stored = self._entries.pop(entry)
                if active:
                    self._account(stored, -1, leaving=True)
        for bucket in self._buckets_between(old.end if old else None, new.end):
            if bucket >= new.start:
                for entry in self._by_bucket.get(bucket, ()):
                    self._account(self._entries[entry], +1)
        self.range = new
        self._advances += 1
        if self._leaving_keys:
            self._drain(max(DRAIN_KEYS, -(-self._leaving_keys // DRAIN_ADVANCES)))
        for details in self._details:
            idle = [
                key
                for key, detail in details.items()
                if self._advances - detail.asked > DETAIL_IDLE_ADVANCES
            ]
            for key in idle:
                del details[key]
        return new

    # -- queries -----------------------------------------------------------

    def distinct(self) -> int:
        return self._regs.estimate_since(self._start())

    def value_max(self) -> float | None:
        return self._max.max_since(self._start())

    def value_min(self) -> float | None:
        negated = self._neg_min.max_since(self._start())
        return None if negated is None else -negated

    def top_keys(self, dim: int, n: int) -> list[str]:
        """The ``n`` keys of dimension ``dim`` with the highest counts (ties by key)."""
        return self._tops[dim].top(
            lambda key: self.key_count(dim, key), lambda: self._every_count(dim), n
        )

    def key_count(self, dim: int, key: str) -> int:
        """The key's count over the window (0 for a key it has not seen)."""
        count = self.key_counts[dim].get(key, 0)
        for leaving in self._leaving[dim]:
            count -= leaving.get(key, 0)
        return count

    def key_distinct(self, dim: int, key: str) -> int:
        detail = self._detail(dim, key)
        return 0 if detail is None else detail.regs.estimate_since(self._start())

    def key_hist(self, dim: int, key: str) -> quantiles.Histogram:
        detail = self._detail(dim, key)
        return {} if detail is None else detail.hist

    def entries(self) -> int:
        return len(self._entries)

    # -- internals ---------------------------------------------------------

    def _start(self) -> int:
        if self.range is None:
            raise RuntimeError("the window has not been advanced yet")
        return self.range.start

    def _detail(self, dim: int, key: str) -> KeyDetail | None:
        """The key's histogram and registers, built from the stored partials the
        first time they are asked for."""
        span = self.range
        if span is None:
            raise RuntimeError("the window has not been advanced yet")
        if not self.key_count(dim, key):
            return None
        details = self._details[dim]
        detail = details.get(key)
        if detail is None:
            hists: list[FlatPairs] = []
            contributions: list[tuple[int, FlatPairs]] = []
            for stored in self._entries.values():
                if span.start <= stored.bucket < span.end:
                    hist = stored.hists[dim].get(key)
                    if hist:
                        hists.append(hist)
                    regs = stored.regs[dim].get(key)
                    if regs:
                        contributions.append((stored.bucket, regs))
            detail = details[key] = KeyDetail(
                quantiles.summed(hists), SlidingRegisters.built(contributions, span.start)
            )
        detail.asked = self._advances
        return detail

    @staticmethod
    def _add_detail(detail: KeyDetail, stored: _Stored, dim: int, key: str, sign: int) -> None:
        hist = stored.hists[dim].get(key)
        if hist:
            quantiles.add_into(detail.hist, hist, sign)
        if sign > 0:
            regs = stored.regs[dim].get(key)
            if regs:
                detail.regs.add(stored.bucket, regs)

    def _buckets_between(self, low: int | None, high: int) -> list[int]:
        """Tracked buckets in [low, high); all tracked below ``high`` when low is None."""
        if low is None or (high - low) // self.bucket_seconds > len(self._by_bucket):
            return sorted(b for b in self._by_bucket if (low is None or b >= low) and b < high)
        return [b for b in range(low, high, self.bucket_seconds) if b in self._by_bucket]

    def _forget(self, entry: Hashable) -> None:
        stored = self._entries.pop(entry, None)
        if stored is not None:
            self._by_bucket.get(stored.bucket, set()).discard(entry)

    def _every_count(self, dim: int) -> dict[str, int]:
        """Every key's count of dimension ``dim``: the leaving counts taken first."""
        self._drain(self._leaving_keys, only=dim)
        return self.key_counts[dim]

    def _drain(self, budget: int, only: int | None = None) -> None:
        """Take up to ``budget`` keys' counts of left partials away."""
        for dim, leaving in enumerate(self._leaving):
            if only is not None and dim != only:
                continue
            while leaving and budget > 0:
                taken = take_counts(self.key_counts[dim], leaving[0], budget)
                budget -= taken
                self._leaving_keys -= taken
                if not leaving[0]:
                    leaving.popleft()

    def _account(self, stored: _Stored, sign: int, *, leaving: bool = False) -> None:
        """Add (``sign`` 1) or take away (-1) a stored partial; ``leaving``: it
        has left the window for good (its counts may be drained later)."""
        total = stored.total
        bucket = stored.bucket
        self.count += sign * total.count
        self.vcount += sign * total.vcount
        self.vsum += sign * total.vsum
        quantiles.add_into(self.hist, total.hist, sign)
        series = self.series.get(bucket, 0) + sign * total.count
        if series:
            self.series[bucket] = series
        else:
            self.series.pop(bucket, None)
        for reason, dropped in stored.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + sign * dropped
        if sign > 0:
            if total.vcount:
                self._max.add(bucket, total.vmax)
                self._neg_min.add(bucket, -total.vmin)
            if total.regs:
                self._regs.add(bucket, total.regs)
        for dim, counts in enumerate(stored.counts):
            key_counts = self.key_counts[dim]
            details = self._details[dim]
            top = self._tops[dim]
            if leaving and len(counts) > DRAIN_KEYS:
                self._leaving[dim].append(counts)  # the stored partial's own dict, left for good
                self._leaving_keys += len(counts)
            else:
                add_counts(key_counts, counts, sign, top.bar, top.candidates)
            if details:
                for key in details.keys() & counts.keys():
                    if self.key_count(dim, key):
                        self._add_detail(details[key], stored, dim, key, sign)
                    else:
                        del details[key]
