"""Decode + fold throughput on one core, against a straightforward baseline
(stdlib json, field checks in Python, one aggregate update per dimension).

Times are the process's CPU time (``time.process_time``): events per second of one
core's work, which other load on a shared machine does not change (it does change
wall-clock time).  Runs of ours and of the baseline alternate."""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass

from aggregator.core.accumulate import FoldSettings, MapFolder
from aggregator.core.events import EventSchema
from aggregator.core.partial import Agg, Partial
from aggregator.core.quantiles import bin_of
from aggregator.ports.source import SourceRecord
from bench.workload import BASE_TS, messages

ROLL_UP_EVERY = 25_000  # ~ one flush interval at 50k events/s
FETCH = 5_000  # records per fetch, as the map stage asks for


@dataclass(frozen=True)
class Throughput:
    name: str
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def ours(batch: list[bytes]) -> Throughput:
    """As the map stage folds: ``fold_many`` over fetches of 5,000 records."""
    folder = MapFolder(FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1 << 20))
    arrived = BASE_TS + 10.0
    records = [SourceRecord(0, offset, arrived, message) for offset, message in enumerate(batch)]
    fetches = [records[at : at + FETCH] for at in range(0, len(records), FETCH)]
    fold_many = folder.fold_many
    read_to: dict[int, int] = {}
    folded = 0
    started = time.process_time()
    for fetch in fetches:
        fold_many(fetch, read_to)
        folded += len(fetch)
        if folded >= ROLL_UP_EVERY:
            folder.partition(0).roll_up()
            folded = 0
    folder.partition(0).roll_up()
    return Throughput(
        "decode+fold (msgspec, combo buffer)", len(batch), time.process_time() - started
    )


def baseline(batch: list[bytes]) -> Throughput:
    """json.loads, checks in Python, and every dimension's aggregate per event."""
    dims = ("app", "platform", "crash_type")
    partials: dict[int, Partial] = {}
    started = time.process_time()
    for message in batch:
        obj = json.loads(message)
        ts = obj.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
            continue
        bucket = int(ts // 1)
        partial = partials.get(bucket)
        if partial is None:
            partial = partials[bucket] = Partial(bucket, len(dims))
        value = obj.get("duration_ms")
        aggs = [partial.total]
        for keys, dim in zip(partial.by, dims, strict=True):
            key = obj.get(dim) or "unknown"
            agg = keys.get(key)
            if agg is None:
                agg = keys[key] = Agg()
            aggs.append(agg)
        for agg in aggs:
            agg.count += 1
            if value is not None:
                agg.vcount += 1
                agg.vsum += value
                agg.vmin = min(agg.vmin, value)
                agg.vmax = max(agg.vmax, value)
                index = bin_of(value)
                agg.hist[index] = agg.hist.get(index, 0) + 1
    return Throughput(
        "baseline (json + per-dimension fold)", len(batch), time.process_time() - started
    )


def run(count: int, repeats: int = 3) -> list[Throughput]:
    batch = messages(count)
    # The input is hundreds of thousands of objects that a consumer never holds at
    # once (it holds one fetch, at most 5,000 records): frozen out of the garbage
    # collector, so its full passes walk the folder's state, not the test data.
    gc.collect()
    gc.freeze()
    try:
        runs = [(ours(batch), baseline(batch)) for _ in range(repeats)]  # interleaved
    finally:
        gc.unfreeze()
    best_ours = min((mine for mine, _ in runs), key=lambda t: t.seconds)
    best_base = min((base for _, base in runs), key=lambda t: t.seconds)
    return [best_ours, best_base]
