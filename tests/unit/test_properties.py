"""Property tests: any way of splitting and merging a stream gives the brute-force
answer (counts, min, max, mean exact; quantiles within 1 %; distinct within the
HLL's stated error)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.core.accumulate import PartitionState
from aggregator.core.events import Event
from aggregator.core.partial import Agg, Partial, merged
from aggregator.core.quantiles import bin_of
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import RollingWindow
from tests.support.oracle import distinct_ok, nearest_rank_value, quantile_ok, truth

DIMS = 2
BUCKET = 2
WINDOW = 20
BASE = 1000

keys = st.sampled_from(["a", "b", "c", "unknown", "é"])
events = st.builds(
    Event,
    ts=st.floats(min_value=BASE - 10, max_value=BASE + 40, allow_nan=False),
    keys=st.tuples(keys, keys),
    value=st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False),
    distinct=st.none() | st.sampled_from([f"dev{i}" for i in range(60)]),
)


def fold_split(
    stream: list[Event], rng: random.Random, partitions: int
) -> list[tuple[tuple[int, int], Partial]]:
    """Fold events into partitions, rolling up at random points; return every
    intermediate stored state, as a store would have seen them over time."""
    states = [PartitionState(DIMS) for _ in range(partitions)]
    offsets = [0] * partitions
    writes: list[tuple[tuple[int, int], Partial]] = []
    for event in stream:
        p = rng.randrange(partitions)
        bucket = int(event.ts // BUCKET) * BUCKET
        states[p].add_event(bucket, offsets[p], event)
        offsets[p] += 1
        if rng.random() < 0.2:
            for partial in states[p].roll_up():
                writes.append(((p, partial.bucket), partial.copy()))
    for p, state in enumerate(states):
        for partial in state.roll_up():
            writes.append(((p, partial.bucket), partial.copy()))
    return writes


def check_snapshot(snapshot: dict[str, Any], stream: list[Event], at: float) -> None:
    end = int(at // BUCKET) * BUCKET
    want = truth(stream, end - WINDOW, end, BUCKET, DIMS)
    total = snapshot["total"]
    assert total["count"] == want.count
    assert distinct_ok(total["distinct"], len(want.devices))
    if want.values:
        value = total["value"]
        assert value["count"] == len(want.values)
        assert value["min"] == min(want.values)
        assert value["max"] == max(want.values)
        assert abs(value["mean"] - sum(want.values) / len(want.values)) <= 1e-9 * max(
            1.0, max(want.values)
        )
        for q, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            assert quantile_ok(value[name], nearest_rank_value(want.values, q)), name
    else:
        assert total["value"] is None
    series = {row["start"]: row["count"] for row in snapshot["series"]}
    assert series == {b: want.series.get(b, 0) for b in range(end - WINDOW, end, BUCKET)}
    for dim, name in enumerate(("d0", "d1")):
        rows = snapshot["by"][name]
        expected = sorted(want.by[dim].items(), key=lambda kv: (-kv[1].count, kv[0]))[:10]
        assert [(r["key"], r["count"]) for r in rows] == [(k, t.count) for k, t in expected]
        for row, (_, key_truth) in zip(rows, expected, strict=True):
            assert distinct_ok(row["distinct"], len(key_truth.devices))
            if key_truth.values:
                assert quantile_ok(row["p99"], nearest_rank_value(key_truth.values, 0.99))
            else:
                assert row["p99"] is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(events, max_size=120),
    partitions=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    at=st.floats(min_value=BASE, max_value=BASE + 60, allow_nan=False),
)
def test_any_split_and_order_gives_brute_force(
    stream: list[Event], partitions: int, seed: int, at: float
) -> None:
    rng = random.Random(seed)
    writes = fold_split(stream, rng, partitions)
    # Deliver the stored states in a shuffled order, keeping each entry's own
    # writes in order (a store never goes back in time for one key).
    rng.shuffle(writes)
    writes.sort(key=lambda w: w[1].offset)
    window = RollingWindow(DIMS, WINDOW, BUCKET)
    for key, partial in writes:
        window.apply(key, partial)
    window.advance(at)
    check_snapshot(build_snapshot(window, ("d0", "d1"), 10), stream, at)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(events, min_size=1, max_size=150),
    seed=st.integers(0, 2**32),
    steps=st.lists(st.floats(min_value=0.1, max_value=9), min_size=1, max_size=8),
)
def test_window_sliding_over_time_matches_a_fresh_window(
    stream: list[Event], seed: int, steps: list[float]
) -> None:
    """Advance tick by tick while partials arrive: at every tick the incremental
    window equals one built from scratch over the latest partials, and once
    everything arrived it equals brute force."""
    rng = random.Random(seed)
    writes = fold_split(stream, rng, 3)
    window = RollingWindow(DIMS, WINDOW, BUCKET)
    latest: dict[tuple[int, int], Partial] = {}
    at = float(BASE)
    pending = list(writes)
    for step in [*steps, 0.0]:
        arriving = len(pending) if step == 0.0 else rng.randrange(len(pending) + 1)
        for _ in range(arriving):
            key, partial = pending.pop(0)
            window.apply(key, partial)
            latest[key] = partial
        window.advance(at)
        fresh = RollingWindow(DIMS, WINDOW, BUCKET)
        for key, partial in latest.items():
            fresh.apply(key, partial)
        fresh.advance(at)
        incremental = build_snapshot(window, ("d0", "d1"), 10)
        assert _same(incremental, build_snapshot(fresh, ("d0", "d1"), 10))
        at += step
    check_snapshot(build_snapshot(window, ("d0", "d1"), 10), stream, at)


def _same(x: dict[str, Any], y: dict[str, Any]) -> bool:
    """Equal snapshots; the running mean may differ from a fresh sum in the last bits."""
    xv, yv = x["total"]["value"], y["total"]["value"]
    if (xv is None) != (yv is None):
        return False
    if xv is not None and abs(xv["mean"] - yv["mean"]) > 1e-9 * max(1.0, abs(yv["mean"])):
        return False
    strip = [dict(s, total=dict(s["total"], value=None)) for s in (x, y)]
    rest = [dict(v, mean=0) for v in (xv, yv)] if xv is not None else [None, None]
    return bool(strip[0] == strip[1] and rest[0] == rest[1])


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.lists(events, max_size=20), min_size=3, max_size=3),
)
def test_merge_is_associative_and_commutative_with_identity(parts: list[list[Event]]) -> None:
    a, b, c = (_partial_of(stream) for stream in parts)
    empty = Partial(0, DIMS)
    assert merged([a, empty], 0, DIMS) == merged([a], 0, DIMS)
    assert merged([a, b], 0, DIMS) == merged([b, a], 0, DIMS) or _close(
        merged([a, b], 0, DIMS), merged([b, a], 0, DIMS)
    )
    left = merged([merged([a, b], 0, DIMS), c], 0, DIMS)
    right = merged([a, merged([b, c], 0, DIMS)], 0, DIMS)
    assert _close(left, right)


def _partial_of(stream: list[Event]) -> Partial:
    state = PartitionState(DIMS)
    for offset, event in enumerate(stream):
        state.add_event(0, offset, event)
    rolled = state.roll_up()
    return rolled[0] if rolled else Partial(0, DIMS)


def _close(x: Partial, y: Partial) -> bool:
    """Equal, except float sums may differ in the last bits with the order."""

    def same(p: Agg, q: Agg) -> bool:
        return (p.count, p.vcount, p.vmin, p.vmax, p.hist, p.regs) == (
            q.count,
            q.vcount,
            q.vmin,
            q.vmax,
            q.hist,
            q.regs,
        ) and abs(p.vsum - q.vsum) <= 1e-9 * max(1.0, abs(p.vsum))

    return (
        same(x.total, y.total)
        and all(
            xs.keys() == ys.keys() and all(same(xs[k], ys[k]) for k in xs)
            for xs, ys in zip(x.by, y.by, strict=True)
        )
        and x.dropped == y.dropped
    )


def test_histogram_bins_bound_relative_error() -> None:
    from aggregator.core.quantiles import bin_value

    for value in (1e-6, 0.5, 1.0, 3.3, 1234.5, 9.9e8):
        assert abs(bin_value(bin_of(value)) - value) <= 0.01 * value


@settings(max_examples=300, deadline=None)
@given(
    adds=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 50)), max_size=40),
    start=st.integers(0, 31),
)
def test_sliding_max_equals_max_over_the_suffix(adds: list[tuple[int, int]], start: int) -> None:
    from aggregator.core.distinct import SlidingMax

    sliding = SlidingMax()
    for time, value in adds:
        sliding.add(time, value)
    expected = max((v for t, v in adds if t >= start), default=None)
    assert sliding.max_since(start) == expected


@settings(max_examples=400, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 7), st.integers(1, 6)),
            st.tuples(st.just("ask"), st.integers(0, 45), st.just(0), st.just(0)),
        ),
        max_size=60,
    )
)
def test_sliding_registers_equal_a_fresh_union(ops: list[tuple[str, int, int, int]]) -> None:
    """Interleaved adds and queries with a start that only moves forward give the
    estimate of the registers recomputed from scratch."""
    from aggregator.core.distinct import SlidingRegisters, estimate

    sliding = SlidingRegisters()
    history: list[tuple[int, int, int]] = []
    start = 0
    for op, time, register, rank in ops:
        if op == "add":
            sliding.add(time, {register: rank})
            history.append((time, register, rank))
        else:
            start = max(start, time)
            best: dict[int, int] = {}
            for t, reg, r in history:
                if t >= start:
                    best[reg] = max(best.get(reg, 0), r)
            assert sliding.estimate_since(start) == estimate(best.values())
