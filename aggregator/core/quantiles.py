"""A mergeable quantile sketch with a guaranteed relative error (DDSketch's idea).

Values v > 0 fall in log-spaced bins: index ceil(log_gamma(v)) with
gamma = (1 + a) / (1 - a).  Reporting a bin by 2 * gamma**i / (gamma + 1) is within
relative error ``a`` of every value in it, so any quantile is within ``a`` of the
exact order statistic.  Values below ``MIN_INDEXABLE`` (zero included) share one bin
reported as 0.  A sketch is just ``dict[bin, count]``: merging adds counts, which is
exact, associative, commutative and invertible (a rolling window can subtract).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from itertools import chain, repeat
from operator import mul

from aggregator.core.types import FlatPairs

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
MIN_INDEXABLE = 1e-9
ZERO_BIN = -(2**31)

Histogram = dict[int, int]


def bin_of(value: float) -> int:
    if value < MIN_INDEXABLE:
        return ZERO_BIN
    return math.ceil(math.log(value) * INV_LOG_GAMMA)


def _count_elements(counts: dict[int, int], items: Iterable[int]) -> None:
    for item in items:
        counts[item] = counts.get(item, 0) + 1


# Counter's C helper: counts into a plain dict at C speed (pure Python elsewhere).
_count: Callable[[dict[int, int], Iterable[int]], None] = getattr(
    collections, "_count_elements", _count_elements
)


def bins_of(values: list[float], low: float) -> list[int]:
    """``bin_of`` of each value (``low`` is their minimum), in one pass in C when
    no value needs the zero bin."""
    if low >= MIN_INDEXABLE:
        return list(map(math.ceil, map(mul, map(math.log, values), repeat(INV_LOG_GAMMA))))
    return list(map(bin_of, values))


def count_into(hist: Histogram, bins: Iterable[int]) -> None:
    """Add one count per bin listed (at C speed)."""
    _count(hist, bins)


def bin_value(index: int) -> float:
    if index == ZERO_BIN:
        return 0.0
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def add_into(
    target: MutableMapping[int, int], source: Mapping[int, int] | FlatPairs, sign: int = 1
) -> None:
    """target += sign * source, dropping bins that reach zero."""
    pairs: Iterable[tuple[int, int]]
    if isinstance(source, tuple):
        flat = iter(source)
        pairs = zip(flat, flat, strict=False)  # consecutive items: even length
    else:
        pairs = source.items()
    for index, count in pairs:
        total = target.get(index, 0) + sign * count
        if total:
            target[index] = total
        else:
            target.pop(index, None)


def summed(parts: Iterable[FlatPairs]) -> Histogram:
    """The sum of histograms given as flat (bin, count, ...) tuples."""
    hist: Histogram = {}
    count_of = hist.get
    flat = chain.from_iterable(parts)
    for index, count in zip(flat, flat, strict=False):  # consecutive items
        hist[index] = count_of(index, 0) + count
    return hist


def nearest_rank(q: float, n: int) -> int:
    """Zero-based rank of the q-quantile of n values: the smallest value with at
    least q * n values at or below it (the nearest-rank definition)."""
    return max(0, math.ceil(q * n) - 1)


def quantiles(hist: Mapping[int, int], qs: Iterable[float]) -> list[float]:
    """For each q, the nearest-rank q-quantile of the n values summarised."""
    n = sum(hist.values())
    if n <= 0:
        raise ValueError("quantile of an empty histogram")
    ordered = sorted(hist.items())
    out: list[float] = []
    for q in qs:
        rank = nearest_rank(q, n)
        seen = 0
        for index, count in ordered:
            seen += count
            if seen > rank:
                out.append(bin_value(index))
                break
    return out
