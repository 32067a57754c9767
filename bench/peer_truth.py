"""The counts a peer must emit: per key and window, by brute force over the
workload's events, and the comparison with what a peer reported.

Windows start on multiples of the step (epoch-aligned, as every peer aligns
them) and cover ``[start, start + window)``; an event at ``t`` is in every
window whose start is in ``(t - window, t]``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

from bench.workload import Event

WindowCounts = dict[str, dict[int, int]]
"""Key -> window start (epoch ms) -> count."""


def window_counts(events: Iterable[Event], window_ms: int, step_ms: int) -> WindowCounts:
    if window_ms % step_ms:
        raise ValueError(f"the window ({window_ms} ms) must be a multiple of the step")
    per_step = Counter((event.key.decode(), event.ts_ms // step_ms) for event in events)
    counts: defaultdict[str, Counter[int]] = defaultdict(Counter)
    spans = window_ms // step_ms
    for (key, slot), count in per_step.items():
        for start in range(slot - spans + 1, slot + 1):
            counts[key][start * step_ms] += count
    return {key: dict(starts) for key, starts in counts.items()}


def reported(windows: Mapping[str, Mapping[str, int]]) -> WindowCounts:
    """A peer's ``windows`` as JSON gave them (window starts as strings)."""
    return {
        key: {int(start): int(n) for start, n in starts.items()} for key, starts in windows.items()
    }


def verdict(truth: WindowCounts, got: WindowCounts) -> str:
    """ "exact", or how many windows differ, and an example."""
    pairs = {(k, s) for k, starts in truth.items() for s in starts}
    pairs |= {(k, s) for k, starts in got.items() for s in starts}
    wrong = sorted(
        (key, start, truth.get(key, {}).get(start, 0), got.get(key, {}).get(start, 0))
        for key, start in pairs
        if truth.get(key, {}).get(start, 0) != got.get(key, {}).get(start, 0)
    )
    if not wrong:
        return "exact"
    key, start, want, have = wrong[0]
    return (
        f"{len(wrong):,} of {len(pairs):,} windows wrong (e.g. {key} at {start}: "
        f"{have:,}, not {want:,})"
    )
