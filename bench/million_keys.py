"""``python -m bench.million_keys [--keys K] [--events N] [--ticks T] [--skip-map] [--no-write]``

Issue 17, part 2: a dimension with a million distinct keys in the window, both
stages, each against its low-cardinality figure measured in the same run.

- reduce: ``bench.reduce_scale`` (a fresh process each) at 1,000 keys and at
  ``--keys``: tick p50 / p99, the first snapshot after the leader's start, and
  the RSS after the last tick.  Its workload puts every key in one bucket (a
  partial that makes every key exist), so one tick sees that bucket leave.
- map: our map stage (``bench.throughput.run_ours``, one process, Kafka and
  Hazelcast from ``python -m infra up``) over ``--events`` events of the
  suite's workload (200 apps), then over as many events that each have an app
  of their own (``--events`` distinct keys); events/s, and the Hazelcast bytes
  per partial written and per flush.

It prints the figures and rewrites the ``bench:million-keys`` block of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import failover, kafka_load, reduce_scale, throughput
from bench.doc import write_block
from bench.reduce_scale import ReduceScale
from bench.throughput import MapRun, Servers
from bench.workload import EventPool

PARTITIONS = 6
SPREAD_MS = 2_000
"""As the suite: the events fill two one-second buckets, interleaved."""
LOW_KEYS = 1_000
TARGET_TICK_P99_MS = 100.0
TARGET_RSS_MIB = 1024
TARGET_MAP_RATIO = 2.0
"""High-cardinality events/s at least the low-cardinality figure over this."""


@dataclass
class MillionKeys:
    reduce: list[ReduceScale]
    maps: list[tuple[str, MapRun]]


def say(text: str) -> None:
    print(text, flush=True)


async def measure_map(events: int, logs: Path) -> list[tuple[str, MapRun]]:
    _, bootstrap, members, cluster_name = failover.servers(kube=False)
    servers = Servers(bootstrap, members, cluster_name)
    prefix = f"bench{secrets.token_hex(3)}"
    runs: list[tuple[str, MapRun]] = []
    pool = EventPool()
    try:
        for label, distinct in (("200 apps", False), (f"{events:,} distinct apps", True)):
            topic = f"{prefix}-{'distinct' if distinct else 'apps'}"
            base_ms = int(time.time()) * 1000
            stream = pool.events(events, base_ms, SPREAD_MS, distinct_apps=distinct)
            produced = await kafka_load.produce(bootstrap, topic, stream, PARTITIONS)
            ends = await kafka_load.end_offsets(bootstrap, topic)
            say(f"map, {label}: {sum(ends.values()):,} events produced in {produced:.1f} s")
            run = await throughput.run_ours(
                servers, topic, ends, 1, f"{prefix}-{'d' if distinct else 'a'}", logs
            )
            runs.append((label, run))
            say(f"  {run.events_per_s:,.0f} events/s; {_bytes(run)}")
    finally:
        await kafka_load.delete_topics(bootstrap, prefix)
    return runs


def _bytes(run: MapRun) -> str:
    per_partial = run.bytes_written / max(1, run.partials_written)
    per_flush = run.bytes_written / max(1, run.flushes)
    return (
        f"{run.flushes} flushes, {run.partials_written:,} bucket writes, "
        f"{per_partial / 1024:,.1f} KiB per bucket write, {per_flush / 2**20:,.2f} MiB per flush"
    )


def table(result: MillionKeys, command: str) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, 2 cores, Python "
        f"{platform.python_version()}; command: `{command}`.",
        "",
        "| measure | at high cardinality | low cardinality (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    if len(result.reduce) == 2:
        low, high = result.reduce
        met_tick = high.p99_ms <= TARGET_TICK_P99_MS
        met_rss = high.rss_kib / 1024 <= TARGET_RSS_MIB
        lines += [
            f"| reduce tick p50 / p99 ms, {high.keys:,} vs {low.keys:,} keys x 300 buckets "
            f"({high.ticks} ticks) | {high.p50_ms:.1f} / {high.p99_ms:.1f} | "
            f"{low.p50_ms:.1f} / {low.p99_ms:.1f} | - | p99 <= {TARGET_TICK_P99_MS:.0f} ms | "
            f"{'yes' if met_tick else '**no**'} |",
            f"| reducer RSS after the last tick, MiB | {high.rss_kib / 1024:.0f} | "
            f"{low.rss_kib / 1024:.0f} | - | <= {TARGET_RSS_MIB} MiB | "
            f"{'yes' if met_rss else '**no**'} |",
            f"| first snapshot after the leader's start (window loaded), ms | "
            f"{high.first_ms:.0f} | {low.first_ms:.0f} | - | - | - |",
        ]
    if len(result.maps) == 2:
        (_, low_map), (high_label, high_map) = result.maps
        ratio = low_map.events_per_s / high_map.events_per_s
        lines += [
            f"| map stage, 1 process, events/s ({high_label} vs 200 apps) | "
            f"{high_map.events_per_s:,.0f} | {low_map.events_per_s:,.0f} | "
            f"{ratio:.2f}x slower | within {TARGET_MAP_RATIO:.0f}x | "
            f"{'yes' if ratio <= TARGET_MAP_RATIO else '**no**'} |",
        ]
        for label, run in ((high_label, high_map), ("200 apps", low_map)):
            lines.append(f"| Hazelcast writes, {label} | {_bytes(run)} | - | - | - | - |")
    return "\n".join(lines)


async def run(args: argparse.Namespace, logs: Path) -> MillionKeys:
    result = MillionKeys([], [])
    for keys in () if args.skip_reduce else (LOW_KEYS, args.keys):
        scale = await reduce_scale.measure(keys, args.ticks, logs)
        result.reduce.append(scale)
        say(
            f"reduce at {keys:,} keys: tick p50 {scale.p50_ms:.1f} ms, p99 {scale.p99_ms:.1f} ms, "
            f"first snapshot {scale.first_ms:.0f} ms, RSS {scale.rss_kib / 1024:.0f} MiB"
        )
    if not args.skip_map:
        result.maps = await measure_map(args.events, logs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.million_keys")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--skip-map", action="store_true", help="the reducer only (no servers)")
    parser.add_argument("--skip-reduce", action="store_true", help="the map stage only")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    command = "python -m bench.million_keys " + " ".join(argv if argv is not None else sys.argv[1:])
    logs = Path(tempfile.mkdtemp(prefix="bench-million-"))
    say(f"child logs in {logs}")
    result = asyncio.run(run(args, logs))
    text = table(result, command.strip())
    say(text)
    if not args.no_write:
        write_block("million-keys", text, "## A million keys (`python -m bench.million_keys`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
