"""Events buffered by combination of keys, and how they become a partial's aggregates.

Folding an event costs one dict lookup and two list appends: its value and device
(either may be None) go, interleaved, to the list of its combination of keys.
``add_combos`` then turns a bucket's lists into the partial's total and one
``Agg`` per key of each dimension, doing the per-value work in bulk, in C where
it can: the histogram bin of every value once, in one pass; bins counted into each
aggregate by Counter's C helper; each distinct device hashed once; and an
aggregate's registers raised once per distinct device it saw, not once per event.
Only the grouping of combinations by key, and those register updates, are Python
loops.

With the C extension built (``native.NATIVE``), ``add_combos`` runs it instead:
the same result, float sums added in the same order, for buffers of the types
the fold makes; ``add_combos_python`` is the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate, chain
from operator import itemgetter

from aggregator.core import distinct, native, quantiles
from aggregator.core.partial import Agg, Partial

Combo = list[float | str | None]
"""The events of one combination of keys in one bucket since the last roll-up:
value, device, value, device, ... (None where an event has none)."""

ROLL_UP = native.RollUpContext(
    agg_type=Agg,
    register_and_rank=distinct.register_and_rank,
    zero_bin=quantiles.ZERO_BIN,
    min_indexable=quantiles.MIN_INDEXABLE,
    inv_log_gamma=quantiles.INV_LOG_GAMMA,
)
"""What the C roll-up needs besides the partial and the buffer."""

_INF = float("inf")
_flat = chain.from_iterable
_values_of = itemgetter(slice(0, None, 2))
_devices_of = itemgetter(slice(1, None, 2))


def add_combos(partial: Partial, combos: dict[tuple[str, ...], Combo]) -> None:
    """Add one bucket's buffered events to ``partial`` (in C when it is built)."""
    compiled = native.NATIVE
    if compiled is not None and compiled.add_combos(ROLL_UP, partial, combos):
        return
    add_combos_python(partial, combos)


def add_combos_python(partial: Partial, combos: dict[tuple[str, ...], Combo]) -> None:
    """``add_combos`` in Python: the reference, and the roll-up without the C extension."""
    members = list(combos.values())
    # Typed as they are once the None entries are gone: values are filtered just
    # below when some event has none, devices are sets with None discarded.
    values_by: list[list[float]] = list(map(_values_of, members))
    devices_by: list[list[str]] = list(map(_devices_of, members))
    try:
        sums_by = list(map(sum, values_by))
    except TypeError:  # some events have no value
        values_by = [[v for v in values if v is not None] for values in values_by]
        sums_by = list(map(sum, values_by))
    vcounts_by = list(map(len, values_by))
    if all(vcounts_by):
        lows_by = list(map(min, values_by))
        highs_by = list(map(max, values_by))
    else:
        lows_by = [min(values, default=_INF) for values in values_by]
        highs_by = [max(values, default=-_INF) for values in values_by]
    every_value = list(_flat(values_by))
    bins = quantiles.bins_of(every_value, min(lows_by)) if every_value else []
    ends = list(accumulate(vcounts_by))
    bins_by = list(map(bins.__getitem__, map(slice, [0, *ends[:-1]], ends)))
    every_device = set(_flat(devices_by))
    every_device.discard(None)
    ranks = distinct.registers_and_ranks(every_device)

    total = partial.total
    total.count += sum(map(len, members)) // 2
    if every_value:
        _add_values(total, len(every_value), sum(sums_by), min(lows_by), max(highs_by), bins)
    distinct.raise_into(total.regs, map(ranks.__getitem__, every_device))

    groups: tuple[dict[str, list[int]], ...] = tuple({} for _ in partial.by)
    for index, keys in enumerate(combos):
        for group, key in zip(groups, keys, strict=False):  # as many as dimensions
            found = group.get(key)
            if found is None:
                group[key] = [index]
            else:
                found.append(index)
    for dim_keys, group in zip(partial.by, groups, strict=True):
        for key, indices in group.items():
            agg = dim_keys.get(key)
            if agg is None:
                agg = dim_keys[key] = Agg()
            devices: Iterable[str]
            if len(indices) == 1:
                (index,) = indices
                agg.count += len(members[index]) // 2
                if vcounts_by[index]:
                    _add_values(
                        agg,
                        vcounts_by[index],
                        sums_by[index],
                        lows_by[index],
                        highs_by[index],
                        bins_by[index],
                    )
                devices = devices_by[index]
            else:
                agg.count += sum(map(len, map(members.__getitem__, indices))) // 2
                vcount = sum(map(vcounts_by.__getitem__, indices))
                if vcount:
                    _add_values(
                        agg,
                        vcount,
                        sum(map(sums_by.__getitem__, indices)),
                        min(map(lows_by.__getitem__, indices)),
                        max(map(highs_by.__getitem__, indices)),
                        _flat(map(bins_by.__getitem__, indices)),
                    )
                devices = _flat(map(devices_by.__getitem__, indices))
            unique = set(devices)
            unique.discard(None)
            distinct.raise_into(agg.regs, map(ranks.__getitem__, unique))


def _add_values(
    agg: Agg, vcount: int, vsum: float, low: float, high: float, bins: Iterable[int]
) -> None:
    agg.vcount += vcount
    agg.vsum += vsum
    if low < agg.vmin:
        agg.vmin = low
    if high > agg.vmax:
        agg.vmax = high
    quantiles.count_into(agg.hist, bins)
