"""Brute force: the snapshot numbers computed the obvious way, for comparison."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aggregator.core.distinct import register_and_rank
from aggregator.core.events import Event
from aggregator.core.partial import Agg, Partial
from aggregator.core.quantiles import bin_of


class Countable(Protocol):
    """What a brute-force partial needs of an event (``Event`` has it)."""

    @property
    def keys(self) -> tuple[str, ...]: ...
    @property
    def value(self) -> float | None: ...
    @property
    def distinct(self) -> str | None: ...


def brute_partial(bucket: int, events: Iterable[Countable], dimensions: int) -> Partial:
    """The partial of ``events`` computed the obvious way: one ``Agg`` update per
    event for the total and for its key in each dimension."""
    partial = Partial(bucket, dimensions)
    for event in events:
        aggs = [partial.total]
        for dim_keys, key in zip(partial.by, event.keys, strict=True):
            aggs.append(dim_keys.setdefault(key, Agg()))
        for agg in aggs:
            agg.count += 1
            if event.value is not None:
                agg.vcount += 1
                agg.vsum += event.value
                agg.vmin = min(agg.vmin, event.value)
                agg.vmax = max(agg.vmax, event.value)
                index = bin_of(event.value)
                agg.hist[index] = agg.hist.get(index, 0) + 1
            if event.distinct is not None:
                register, rank = register_and_rank(event.distinct)
                agg.regs[register] = max(agg.regs.get(register, 0), rank)
    return partial


@dataclass
class KeyTruth:
    count: int = 0
    devices: set[str] = field(default_factory=set)
    values: list[float] = field(default_factory=list)


@dataclass
class Truth:
    count: int
    devices: set[str]
    values: list[float]
    by: list[dict[str, KeyTruth]]
    series: Counter[int]


def nearest_rank_value(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def truth(events: list[Event], start: int, end: int, bucket_seconds: int, dims: int) -> Truth:
    inside = [e for e in events if start <= (e.ts // bucket_seconds) * bucket_seconds < end]
    by: list[dict[str, KeyTruth]] = [defaultdict(KeyTruth) for _ in range(dims)]
    series: Counter[int] = Counter()
    for event in inside:
        series[int(event.ts // bucket_seconds) * bucket_seconds] += 1
        for dim, key in enumerate(event.keys):
            row = by[dim][key]
            row.count += 1
            if event.distinct is not None:
                row.devices.add(event.distinct)
            if event.value is not None:
                row.values.append(event.value)
    return Truth(
        count=len(inside),
        devices={e.distinct for e in inside if e.distinct is not None},
        values=[e.value for e in inside if e.value is not None],
        by=[dict(d) for d in by],
        series=series,
    )


def distinct_ok(estimate: int, exact: int) -> bool:
    """Within three standard errors of HLL at precision 12 (1.63 % each), or 1."""
    return abs(estimate - exact) <= max(1, 3 * 0.0163 * exact)


def quantile_ok(estimate: float, exact: float, accuracy: float = 0.01) -> bool:
    return abs(estimate - exact) <= accuracy * exact + 1e-9
