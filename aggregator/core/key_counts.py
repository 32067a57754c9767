"""Per-key counts of one dimension over the window, added to and taken from in bulk.

``add_counts`` is the reducer's per-key loop: a partial entering the window adds
its keys' counts, a partial leaving it (or replaced by a grown one) takes them
away.  At a million keys a bucket that leaves can carry most of them, and that
loop was the tick's largest cost; the C extension (``_native.c``, ``add_counts``)
runs it when it is built.  ``add_counts_python`` is its twin, the one place the
rule is spelled in Python; tests/unit/test_key_counts.py holds the two equal.
``take_counts`` (and its twin ``take_counts_python``) takes a left partial's
counts away a slice at a time (``window.DRAIN_KEYS``).

While adding, it also notes the keys that now rank at or above the top keys'
``Bar`` (``window.TopKeys``), so the top keys never need the list of every key
that changed: a key whose count went down cannot rise past the bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice

from aggregator.core import native

Bar = tuple[int, str]
"""(count, key): a key ranks at or above the bar when its count is higher, or
equal with a key that sorts no later (top keys go by count descending, then key)."""


def ranks_at_or_above(count: int, key: str, bar: Bar) -> bool:
    return count > bar[0] or (count == bar[0] and key <= bar[1])


def add_counts(
    totals: dict[str, int], counts: Mapping[str, int], sign: int, bar: Bar | None, risen: set[str]
) -> None:
    """``totals[key] += sign * counts[key]`` for every key, a total that reaches
    zero deleted; with ``sign`` +1 and a ``bar``, every key whose total now ranks
    at or above it goes into ``risen``."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, not {sign!r}")
    if totals is counts:
        raise ValueError("cannot add counts into themselves")
    compiled = native.NATIVE
    if compiled is not None and type(counts) is dict and type(totals) is dict:
        compiled.add_counts(totals, counts, sign, bar, risen)
    else:
        add_counts_python(totals, counts, sign, bar, risen)


def add_counts_python(
    totals: dict[str, int], counts: Mapping[str, int], sign: int, bar: Bar | None, risen: set[str]
) -> None:
    """``add_counts`` in Python (``_native.c``'s ``add_counts`` is its twin)."""
    note = sign > 0 and bar is not None
    for key, count in counts.items():
        total = totals.get(key, 0) + sign * count
        if total:
            totals[key] = total
            if note and bar is not None and ranks_at_or_above(total, key, bar):
                risen.add(key)
        else:
            totals.pop(key, None)


def take_counts(totals: dict[str, int], counts: dict[str, int], limit: int) -> int:
    """Move up to ``limit`` keys out of ``counts``, taking each one's count away
    from ``totals`` (a total that reaches zero deleted); how many it moved."""
    if totals is counts:
        raise ValueError("cannot take counts from themselves")
    compiled = native.NATIVE
    if compiled is not None and type(counts) is dict and type(totals) is dict:
        return compiled.take_counts(totals, counts, limit)
    return take_counts_python(totals, counts, limit)


def take_counts_python(totals: dict[str, int], counts: dict[str, int], limit: int) -> int:
    """``take_counts`` in Python (``_native.c``'s ``take_counts`` is its twin)."""
    keys = list(islice(counts, max(0, limit)))
    for key in keys:
        total = totals.get(key, 0) - counts.pop(key)
        if total:
            totals[key] = total
        else:
            totals.pop(key, None)
    return len(keys)
