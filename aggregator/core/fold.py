"""Folding decoded events into partials: the map stage's inner loop.

``fold_event`` updates the total and one aggregate per dimension.  The histogram
bin and the distinct register are computed once per event, not once per aggregate.
"""

from __future__ import annotations

from aggregator.core import distinct, quantiles
from aggregator.core.events import Event
from aggregator.core.partial import Agg, Partial

_bin_of = quantiles.bin_of
_register_and_rank = distinct.register_and_rank


def fold_event(partial: Partial, event: Event) -> None:
    value = event.value
    device = event.distinct
    index = _bin_of(value) if value is not None else 0
    register, rank = _register_and_rank(device) if device is not None else (0, 0)
    aggs = [partial.total]
    for keys, key in zip(partial.by, event.keys, strict=True):
        agg = keys.get(key)
        if agg is None:
            agg = keys[key] = Agg()
        aggs.append(agg)
    for agg in aggs:
        agg.count += 1
        if value is not None:
            agg.vcount += 1
            agg.vsum += value
            if value < agg.vmin:
                agg.vmin = value
            if value > agg.vmax:
                agg.vmax = value
            hist = agg.hist
            hist[index] = hist.get(index, 0) + 1
        if rank:
            regs = agg.regs
            if rank > regs.get(register, 0):
                regs[register] = rank
