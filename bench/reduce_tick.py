"""Reduce tick time at K keys x B buckets: the incremental window against a full
re-merge of the whole window every tick (the baseline).

Setup plays the leader's start: load the window's partials, advance, and build a
first snapshot (which builds the top keys' histograms and registers from the
stored partials); ``first_ms`` reports that first snapshot, the ticks are the
steady ones after it.  The baseline's partials are kept serialized between runs
and decoded outside its timed part: live, they would be a heap the reducer never
holds (it keeps a compact copy), and every garbage collection pass would walk it.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field

import orjson

from aggregator.core.distinct import register_and_rank
from aggregator.core.partial import Agg, Partial
from aggregator.core.quantiles import bin_of
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import RollingWindow

DIMS = ("app", "platform", "crash_type")
PARTITIONS = 6


@dataclass(frozen=True)
class TickTimes:
    name: str
    keys: int
    buckets: int
    samples: list[float]
    first_ms: float = field(default=0.0)
    """The first snapshot after loading the window (part of the setup)."""

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


def _partial(rng: random.Random, bucket: int, keys: int, per_bucket: int) -> Partial:
    partial = Partial(bucket, len(DIMS))
    for _ in range(per_bucket):
        agg = Agg()
        agg.count = rng.randrange(1, 20)
        value = rng.lognormvariate(5, 1)
        agg.vcount, agg.vsum, agg.vmin, agg.vmax = 1, value, value, value
        agg.hist = {bin_of(value): 1}
        register, rank = register_and_rank(f"d{rng.randrange(100_000)}")
        agg.regs = {register: rank}
        partial.total.merge_from(agg)
        names = (f"key-{rng.randrange(keys)}", f"p{rng.randrange(5)}", f"c{rng.randrange(6)}")
        for dim_keys, name in zip(partial.by, names, strict=True):
            own = dim_keys.get(name)
            if own is None:
                dim_keys[name] = agg.copy()
            else:
                own.merge_from(agg)
    return partial


def run(keys: int, buckets: int, ticks: int = 40, per_bucket: int = 1000) -> list[TickTimes]:
    rng = random.Random(3)
    per_partition = max(1, per_bucket // PARTITIONS)
    window = RollingWindow(len(DIMS), buckets, 1)
    history: dict[tuple[int, int], bytes] = {}
    for bucket in range(buckets):
        for p in range(PARTITIONS):
            partial = _partial(rng, bucket, keys, per_partition)
            history[(p, bucket)] = orjson.dumps(partial.to_wire())
            window.apply((p, bucket), partial)
    # Make sure every key exists somewhere in the window.
    seed = Partial(0, len(DIMS))
    for k in range(keys):
        agg = Agg()
        agg.count = 1
        seed.by[0][f"key-{k}"] = agg
        seed.total.count += 1
    history[(PARTITIONS, 0)] = orjson.dumps(seed.to_wire())
    window.apply((PARTITIONS, 0), seed)
    window.advance(buckets - 0.5)
    started = time.perf_counter()
    build_snapshot(window, DIMS, 10)
    first = time.perf_counter() - started

    incremental: list[float] = []
    now = float(buckets)
    for tick in range(ticks):
        bucket = buckets + tick
        changed = [
            ((p, bucket - 1), _partial(rng, bucket - 1, keys, per_partition))
            for p in range(PARTITIONS)
        ]
        started = time.perf_counter()
        for key, partial in changed:
            window.apply(key, partial)
        window.advance(now + 0.5)
        build_snapshot(window, DIMS, 10)
        incremental.append(time.perf_counter() - started)
        history.update((key, orjson.dumps(partial.to_wire())) for key, partial in changed)
        now += 1

    stored = [(key, Partial.from_wire(orjson.loads(blob))) for key, blob in history.items()]
    full: list[float] = []
    for _ in range(max(3, ticks // 10)):
        started = time.perf_counter()
        fresh = RollingWindow(len(DIMS), buckets, 1)
        for key, partial in stored:
            fresh.apply(key, partial)
        fresh.advance(now - 0.5)
        build_snapshot(fresh, DIMS, 10)
        full.append(time.perf_counter() - started)
    return [
        TickTimes("incremental window", keys, buckets, incremental, first * 1000),
        TickTimes("baseline: re-merge the window", keys, buckets, full),
    ]
