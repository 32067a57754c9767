"""The window's shortcuts against the obvious computation: top keys found among
the keys that rose past a bar equal a full sort, a bulk-built distinct sketch equals one fed pair by
pair, and key details built on demand (and dropped when idle) equal a fresh window."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core.distinct import SlidingRegisters
from aggregator.core.key_counts import add_counts
from aggregator.core.partial import Agg, Partial
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import DETAIL_IDLE_ADVANCES, RollingWindow, TopKeys


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.lists(st.tuples(st.integers(0, 300), st.integers(-3, 3)), max_size=40), max_size=30
    ),
    n=st.integers(1, 12),
)
def test_top_keys_equal_a_full_sort(steps: list[list[tuple[int, int]]], n: int) -> None:
    counts: dict[str, int] = {}
    top = TopKeys()
    for changes in steps:
        for number, delta in changes:
            key = f"k{number}"
            delta = max(delta, -counts.get(key, 0))  # counts never go below zero
            if delta:
                add_counts(
                    counts, {key: abs(delta)}, 1 if delta > 0 else -1, top.bar, top.candidates
                )
        expected = sorted(counts, key=lambda key: (-counts[key], key))[:n]
        assert top.top(lambda key: counts.get(key, 0), lambda: counts, n) == expected


@settings(max_examples=300, deadline=None)
@given(
    contributions=st.lists(
        st.tuples(
            st.integers(10, 40),
            st.dictionaries(st.integers(0, 7), st.integers(1, 6), max_size=5),
        ),
        max_size=30,
    ),
    start=st.integers(0, 40),
    later=st.lists(
        st.tuples(
            st.integers(10, 50),
            st.dictionaries(st.integers(0, 7), st.integers(1, 6), max_size=3),
            st.integers(0, 10),
        ),
        max_size=10,
    ),
)
def test_bulk_built_registers_equal_registers_added_one_by_one(
    contributions: list[tuple[int, dict[int, int]]],
    start: int,
    later: list[tuple[int, dict[int, int], int]],
) -> None:
    kept = [(time, regs) for time, regs in contributions if time >= start]
    one_by_one = SlidingRegisters()
    for time, regs in kept:
        one_by_one.add(time, regs)
    built = SlidingRegisters.built(
        [(time, tuple(n for pair in regs.items() for n in pair)) for time, regs in kept], start
    )
    assert built.estimate_since(start) == one_by_one.estimate_since(start)
    for time, regs, step in later:
        start += step
        one_by_one.add(time, regs)
        built.add(time, regs)
        assert built.estimate_since(start) == one_by_one.estimate_since(start)


def _partial(rng: random.Random, bucket: int, keys: int) -> Partial:
    partial = Partial(bucket, 2)
    for _ in range(rng.randrange(1, 30)):
        agg = Agg()
        agg.count = 1
        value = rng.uniform(0.5, 500)
        agg.vcount, agg.vsum, agg.vmin, agg.vmax = 1, value, value, value
        agg.hist = {rng.randrange(100): 1}
        agg.regs = {rng.randrange(64): rng.randrange(1, 8)}
        partial.total.merge_from(agg)
        for dim_keys, key in zip(
            partial.by, (f"a{rng.randrange(keys)}", f"b{rng.randrange(3)}"), strict=True
        ):
            if key in dim_keys:
                dim_keys[key].merge_from(agg)
            else:
                dim_keys[key] = agg.copy()
    return partial


def test_key_details_built_on_demand_and_dropped_when_idle_equal_a_fresh_window() -> None:
    rng = random.Random(5)
    window = RollingWindow(2, 20, 1)
    latest: dict[tuple[int, int], Partial] = {}
    for tick in range(3 * DETAIL_IDLE_ADVANCES):
        for partition in range(2):
            for bucket in (tick, tick - 1, tick - 5):  # late updates of older buckets too
                partial = latest.get((partition, bucket))
                grown = _partial(rng, bucket, 40)
                if partial is not None:
                    grown.merge_from(partial)
                latest[(partition, bucket)] = grown
                window.apply((partition, bucket), grown)
        window.advance(tick + 0.5)
        # Ask for a changing few keys, so details come, stay, go idle and return.
        top_n = 3 if tick % 40 < 20 else 10
        incremental = build_snapshot(window, ("a", "b"), top_n)
        fresh = RollingWindow(2, 20, 1)
        for entry, partial in latest.items():
            fresh.apply(entry, partial)
        fresh.advance(tick + 0.5)
        expected = build_snapshot(fresh, ("a", "b"), top_n)
        assert incremental["by"] == expected["by"]
        assert incremental["total"]["distinct"] == expected["total"]["distinct"]


@settings(max_examples=200, deadline=None)
@given(
    flushes=st.lists(
        st.lists(st.tuples(st.integers(0, 9), st.sampled_from("abcde")), max_size=8),
        min_size=1,
        max_size=25,
    ),
    seal_after=st.lists(st.integers(0, 4), min_size=10, max_size=10),
    steps=st.lists(st.sampled_from(["apply", "full read", "advance"]), max_size=80),
    seed=st.integers(0, 2**16),
)
def test_segments_add_to_their_bucket_and_leave_with_it(
    flushes: list[list[tuple[int, str]]], seal_after: list[int], steps: list[str], seed: int
) -> None:
    """A sealed bucket reaches the reducer as its base entry plus one entry per
    segment (``PartialKey.segment``): whatever the order of changes, full reads
    and advances, the window counts each event once, and forgets every entry of
    a bucket that leaves."""
    rng = random.Random(seed)
    store: dict[tuple[int, int], Partial] = {}
    """(bucket, segment) -> the entry's state, as Hazelcast holds it."""
    writes = dict.fromkeys(range(10), 0)
    changes: list[tuple[tuple[int, int], Partial]] = []
    for events in flushes:
        deltas: dict[int, Partial] = {}
        for bucket, app in events:
            delta = deltas.setdefault(bucket, Partial(bucket, 1))
            one = Agg()
            one.count = 1
            delta.total.merge_from(one)
            delta.by[0].setdefault(app, Agg()).merge_from(one)
        for bucket, delta in deltas.items():
            writes[bucket] += 1
            if writes[bucket] <= seal_after[bucket] + 1:  # the base, merged whole
                key = (bucket, 0)
                if key in store:
                    store[key] = store[key].copy()
                    store[key].merge_from(delta)
                else:
                    store[key] = delta
            else:
                key = (bucket, writes[bucket] - seal_after[bucket] - 1)  # segment 1, 2, ...
                store[key] = delta
            changes.append((key, store[key]))
    window = RollingWindow(1, 5, 1)
    now = 5.0
    window.advance(now)
    pending = list(changes)
    for step in steps:
        if step == "apply" and pending:
            # any entry's next change: one entry's changes arrive in order, entries in any
            chosen = pending[rng.randrange(len(pending))][0]
            first = next(i for i, (key, _) in enumerate(pending) if key == chosen)
            window.apply(*pending.pop(first))
        elif step == "full read":
            for key, value in store.items():
                window.apply(key, value)
            pending = []  # the read holds every write so far (the feed drops its buffer)
        elif step == "advance" and now < 12:
            now += 1
            window.advance(now)
    for key, value in pending:
        window.apply(key, value)
    assert window.range is not None
    start, end = window.range.start, window.range.end
    truth = [(b, app) for events in flushes for b, app in events if start <= b < end]
    assert window.count == len(truth)
    for app in "abcde":
        assert window.key_count(0, app) == sum(1 for _, a in truth if a == app)
    window.advance(100.0)
    assert window.entries() == 0
    assert window.count == 0
