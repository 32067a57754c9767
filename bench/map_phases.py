"""Where a map process's CPU goes per event, phase by phase, without Kafka or
Hazelcast: what the throughput suite's 1-process run does after aiokafka has
built its records.

The input is the suite's workload (6 partitions, events scattered over two
one-second buckets) as aiokafka ``ConsumerRecord``s, handed over in fetches of
5,000 records (a run per partition, as ``getmany`` returns them); the folder
rolls up every 125,000 events (one flush interval at about 250k events/s) and
every delta rolled up is encoded as ``HazelcastStore`` writes a sealed bucket's
segment (a bucket still whole is written merged, at most ``SEAL_BYTES``).  Times are
process CPU time, best of ``--repeats``; the same runs with the C extension
switched off are the baseline.

``python -m bench.map_phases [--events N] [--distinct-apps]`` (``--distinct-apps``:
every event has an app of its own, the highest cardinality; issue 17)
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from aggregator.adapters.hazelcast import codec
from aggregator.adapters.kafka.records import to_records
from aggregator.core import native
from aggregator.core.accumulate import FoldSettings, MapFolder
from aggregator.core.events import EventSchema
from aggregator.ports.source import SourceRecord
from aggregator.services.map_stage import FETCH_MAX_RECORDS
from bench.workload import BASE_TS, EventPool

PARTITIONS = 6
SPREAD_MS = 2000
ROLL_UP_EVERY = 125_000

Fetch = dict[int, list[ConsumerRecord[bytes, bytes]]]


@dataclass(frozen=True)
class Phases:
    """CPU seconds of each phase over ``events`` events."""

    events: int
    """Events the folder counted (the workload has no malformed ones)."""
    records: float
    fold: float
    roll_up: float
    encode: float

    def per_event_us(self, seconds: float) -> float:
        return seconds / self.events * 1e6

    @property
    def total(self) -> float:
        return self.records + self.fold + self.roll_up + self.encode


def fetches(events: int, *, distinct_apps: bool = False) -> list[Fetch]:
    pool = EventPool()
    per: list[list[ConsumerRecord[bytes, bytes]]] = [[] for _ in range(PARTITIONS)]
    stream = pool.events(events, BASE_TS * 1000, SPREAD_MS, distinct_apps=distinct_apps)
    for index, event in enumerate(stream):
        records = per[index % PARTITIONS]
        records.append(
            ConsumerRecord(
                "events", index % PARTITIONS, len(records), event.ts_ms, 0, event.key,
                event.value, None, len(event.key), len(event.value), (),
            )
        )  # fmt: skip
    chunk = FETCH_MAX_RECORDS // PARTITIONS
    return [
        {p: per[p][at : at + chunk] for p in range(PARTITIONS)}
        for at in range(0, max(map(len, per)), chunk)
    ]


def measure(batches: Sequence[Fetch]) -> Phases:
    folder = MapFolder(FoldSettings(EventSchema(), 1, 300, 30.0, 60.0, 1 << 20))
    records_s = fold_s = roll_s = encode_s = 0.0
    events = since_roll_up = 0
    read_to: dict[int, int] = {}
    clock = time.process_time

    def roll_up() -> tuple[float, float]:
        started = clock()
        rolled = [(p, folder.partition(p).roll_up()) for p in range(PARTITIONS)]
        rolled_at = clock()
        for p, partials in rolled:
            for partial in partials:
                codec.encode_partial(partial, "bench")
            folder.partition(p).stored(partial.bucket for partial in partials)
        return rolled_at - started, clock() - rolled_at

    for batch in batches:
        started = clock()
        records: list[SourceRecord] = []
        for partition, messages in batch.items():
            records.extend(to_records(partition, messages))
        built = clock()
        counted, _, _ = folder.fold_many(records, read_to)
        records_s += built - started
        fold_s += clock() - built
        events += counted
        since_roll_up += len(records)
        if since_roll_up >= ROLL_UP_EVERY:
            since_roll_up = 0
            rolled, encoded = roll_up()
            roll_s += rolled
            encode_s += encoded
    rolled, encoded = roll_up()
    return Phases(events, records_s, fold_s, roll_s + rolled, encode_s + encoded)


def best_of(batches: Sequence[Fetch], repeats: int, *, compiled: bool) -> Phases:
    """The fastest of ``repeats`` runs, with the C extension or without it."""
    saved = native.NATIVE
    if not compiled:
        native.NATIVE = None
    try:
        return min((measure(batches) for _ in range(repeats)), key=lambda p: p.total)
    finally:
        native.NATIVE = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.map_phases")
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--distinct-apps", action="store_true", help="every event an app of its own"
    )
    args = parser.parse_args(argv)
    batches = fetches(args.events, distinct_apps=args.distinct_apps)
    gc.collect()
    gc.freeze()  # as aggregator run does; the input is not what the collector should walk
    runs = {"python": best_of(batches, args.repeats, compiled=False)}
    if native.NATIVE is not None:
        runs["C extension"] = best_of(batches, args.repeats, compiled=True)
    print(
        f"map stage CPU per event after aiokafka (us), {args.events:,} events,"
        f" best of {args.repeats}:"
    )
    print(f"  {'phase':34s}" + "".join(f"{name:>13s}" for name in runs))
    for label, part in (
        ("KafkaRecord from ConsumerRecord", "records"),
        ("fold (decode, judge, buffer)", "fold"),
        ("roll-up into partials", "roll_up"),
        ("encode for Hazelcast", "encode"),
        ("total", "total"),
    ):
        cells = "".join(f"{run.per_event_us(getattr(run, part)):13.3f}" for run in runs.values())
        print(f"  {label:34s}{cells}")
    print(f"  {'events/s of one core':34s}" + "".join(
        f"{run.events / run.total:13,.0f}" for run in runs.values()
    ))  # fmt: skip
    if "C extension" in runs:
        ratio = runs["python"].total / runs["C extension"].total
        print(f"  the C extension: {ratio:.2f}x the Python code's events/s")
    else:
        print("  the C extension is not built (see hatch_build.py): Python only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
