"""A leaving partial with many keys is taken from the per-key counts over later
advances (``window.DRAIN_KEYS``); meanwhile every count, top key, histogram and
distinct estimate in the snapshot equals a fresh window's, with the C extension
and without it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import native, window
from aggregator.core.distinct import register_and_rank
from aggregator.core.partial import Agg, Partial
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import RollingWindow
from tests.unit.test_properties import _same

DIMS = ("key", "kind")
WINDOW = 10


@contextmanager
def draining(compiled: bool) -> Iterator[None]:
    """Drain anything with more than one key, one key an advance."""
    saved = window.DRAIN_KEYS, window.DRAIN_ADVANCES, native.NATIVE
    window.DRAIN_KEYS, window.DRAIN_ADVANCES = 1, 10**9
    if not compiled:
        native.NATIVE = None
    try:
        yield
    finally:
        window.DRAIN_KEYS, window.DRAIN_ADVANCES, native.NATIVE = saved


def partial(rng: random.Random, bucket: int, keys: int, events: int) -> Partial:
    built = Partial(bucket, len(DIMS))
    for _ in range(events):
        agg = Agg()
        agg.count = rng.randrange(1, 4)
        value = rng.uniform(1, 100)
        agg.vcount, agg.vsum, agg.vmin, agg.vmax = 1, value, value, value
        agg.hist = {int(value): 1}
        register, rank = register_and_rank(f"d{rng.randrange(50)}")
        agg.regs = {register: rank}
        built.total.merge_from(agg)
        for keys_of_dim, name in zip(
            built.by, (f"k{rng.randrange(keys)}", f"c{rng.randrange(3)}"), strict=True
        ):
            if name in keys_of_dim:
                keys_of_dim[name].merge_from(agg)
            else:
                keys_of_dim[name] = agg.copy()
    return built


def snapshot_of(latest: dict[tuple[int, int], Partial], at: float) -> dict[str, Any]:
    fresh = RollingWindow(len(DIMS), WINDOW, 1)
    for entry, stored in latest.items():
        fresh.apply(entry, stored)
    fresh.advance(at)
    return build_snapshot(fresh, DIMS, 5)


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "python"])
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    keys=st.integers(1, 40),
    steps=st.lists(st.integers(1, 4), min_size=1, max_size=25),
)
def test_drained_window_equals_a_fresh_one(
    compiled: bool, seed: int, keys: int, steps: list[int]
) -> None:
    if compiled and native.NATIVE is None:
        pytest.skip("the C extension is not built")
    rng = random.Random(seed)
    with draining(compiled):
        drained = RollingWindow(len(DIMS), WINDOW, 1)
        latest: dict[tuple[int, int], Partial] = {}
        now = 0
        for step in steps:
            for _ in range(rng.randrange(4)):
                entry = (rng.randrange(2), now - rng.randrange(3))
                grown = partial(rng, entry[1], keys, rng.randrange(1, 12))
                if entry in latest:
                    grown.merge_from(latest[entry])
                latest[entry] = grown
                drained.apply(entry, grown)
            now += step
            drained.advance(now)
            latest = {entry: p for entry, p in latest.items() if entry[1] >= now - WINDOW}
            assert _same(build_snapshot(drained, DIMS, 5), snapshot_of(latest, now))


def test_a_bucket_of_many_keys_leaves_over_several_advances_with_exact_counts() -> None:
    rng = random.Random(7)
    with draining(native.NATIVE is not None):
        window.DRAIN_ADVANCES = 4
        drained = RollingWindow(len(DIMS), WINDOW, 1)
        crowd = partial(rng, 0, 500, 2_000)
        steady = {(1, b): partial(rng, b, 20, 30) for b in range(1, 40)}
        drained.apply((0, 0), crowd)
        latest = {(0, 0): crowd}
        for now in range(1, 30):
            drained.apply((1, now), steady[(1, now)])
            latest[(1, now)] = steady[(1, now)]
            drained.advance(now + 0.5)
            latest = {entry: p for entry, p in latest.items() if entry[1] >= now - WINDOW}
            assert _same(build_snapshot(drained, DIMS, 5), snapshot_of(latest, now + 0.5))
            inside = [p for p in latest.values() if p.bucket < now]  # `now` is still filling
            counts = {key: drained.key_count(0, key) for key in crowd.by[0]}
            expected = {
                key: sum(p.by[0][key].count for p in inside if key in p.by[0])
                for key in crowd.by[0]
            }
            assert counts == expected
        exact: dict[str, int] = {}
        for p in inside:
            for key, agg in p.by[0].items():
                exact[key] = exact.get(key, 0) + agg.count
        assert drained.key_counts[0] == exact  # drained to the end by now
