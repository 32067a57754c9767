"""``python -m bench.million_keys [--keys K] [--events N] [--ticks T] [--rounds R] [--skip-map]
[--skip-reduce] [--no-write]``

Issue 17, part 2: a dimension with a million distinct keys in the window, both
stages, each against its low-cardinality figure measured in the same run.

- reduce: ``bench.reduce_scale`` (a fresh process each) at 1,000 keys and at
  ``--keys``: tick p50 / p99, the first snapshot after the leader's start, and
  the RSS after the last tick.  Its workload puts every key in one bucket (a
  partial that makes every key exist), so one tick sees that bucket leave.
- map: our map stage (``bench.throughput.run_ours``, one process, Kafka and
  Hazelcast from ``python -m infra up``) over ``--events`` events of the
  suite's workload (200 apps), then over as many events that each have an app
  of their own (``--events`` distinct keys), ``--rounds`` times in alternating
  order; events/s, the median of the rounds' ratios as the verdict, and the
  Hazelcast bytes per partial written and per flush.

It prints the figures and rewrites the ``bench:million-keys`` block of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.adapters.hazelcast.connection import connect
from aggregator.wiring import production
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
"""High-cardinality events/s at least the low-cardinality figure over this (the
median of the rounds' ratios: one pair of runs on this machine varied from 1.3x
to 2.0x with the same code)."""
LOW_LABEL = "200 apps"


@dataclass
class MillionKeys:
    reduce: list[ReduceScale]
    maps: list[tuple[str, MapRun]]


def say(text: str) -> None:
    print(text, flush=True)


async def measure_map(events: int, rounds: int, logs: Path) -> list[tuple[str, MapRun]]:
    """``rounds`` pairs of runs, low and high cardinality, in alternating order (a
    drift of the machine's speed during the run then weighs on both alike); each
    on a topic and a Hazelcast scope of its own, whose maps are dropped after it
    (a million keys' partials fill the local members' heap in two runs)."""
    _, bootstrap, members, cluster_name = failover.servers(kube=False)
    servers = Servers(bootstrap, members, cluster_name)
    prefix = f"bench{secrets.token_hex(3)}"
    runs: list[tuple[str, MapRun]] = []
    pool = EventPool()
    both = [(LOW_LABEL, False), (f"{events:,} distinct apps", True)]
    try:
        for round_ in range(rounds):
            for label, distinct in both if round_ % 2 == 0 else both[::-1]:
                name = f"{prefix}-{round_}{'d' if distinct else 'a'}"
                base_ms = int(time.time()) * 1000
                stream = pool.events(events, base_ms, SPREAD_MS, distinct_apps=distinct)
                produced = await kafka_load.produce(bootstrap, name, stream, PARTITIONS)
                ends = await kafka_load.end_offsets(bootstrap, name)
                say(
                    f"map, round {round_ + 1}, {label}: {sum(ends.values()):,} events "
                    f"produced in {produced:.1f} s"
                )
                run = await throughput.run_ours(servers, name, ends, 1, name, logs)
                await drop_scope(servers, throughput.map_scope(name, 1))
                runs.append((label, run))
                say(f"  {run.events_per_s:,.0f} events/s; {_bytes(run)}")
    finally:
        await kafka_load.delete_topics(bootstrap, prefix)
    return runs


async def drop_scope(servers: Servers, scope: str) -> None:
    """Destroy the Hazelcast maps a map process wrote in ``scope``."""
    client = await connect(
        servers.hazelcast_members, servers.hazelcast_cluster, client_name=f"{scope}-cleanup"
    )
    try:
        for structure in ("partials", "members"):
            imap: Any = await client.get_map(production.scoped_name(structure, scope))
            await imap.destroy()
    finally:
        await client.shutdown()


def _bytes(run: MapRun) -> str:
    per_partial = run.bytes_written / max(1, run.partials_written)
    per_flush = run.bytes_written / max(1, run.flushes)
    return (
        f"{run.flushes} flushes, {run.partials_written:,} bucket writes, "
        f"{per_partial / 1024:,.1f} KiB per bucket write, {per_flush / 2**20:,.2f} MiB per flush"
    )


def _median_rate(runs: list[MapRun]) -> str:
    return f"{statistics.median(run.events_per_s for run in runs):,.0f}"


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
    if result.maps:
        low_runs = [run for label, run in result.maps if label == LOW_LABEL]
        high_label = next(label for label, _ in result.maps if label != LOW_LABEL)
        high_runs = [run for label, run in result.maps if label == high_label]
        ratios = [
            lo.events_per_s / hi.events_per_s for lo, hi in zip(low_runs, high_runs, strict=True)
        ]
        ratio = statistics.median(ratios)
        each = ", ".join(f"{r:.2f}x" for r in ratios)
        lines += [
            f"| map stage, 1 process, events/s ({high_label} vs {LOW_LABEL}; median of "
            f"{len(ratios)} rounds) | {_median_rate(high_runs)} | {_median_rate(low_runs)} | "
            f"{ratio:.2f}x slower (rounds: {each}) | within {TARGET_MAP_RATIO:.0f}x | "
            f"{'yes' if ratio <= TARGET_MAP_RATIO else '**no**'} |",
        ]
        for label, run in ((high_label, high_runs[-1]), (LOW_LABEL, low_runs[-1])):
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
        result.maps = await measure_map(args.events, args.rounds, logs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.million_keys")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument(
        "--rounds", type=int, default=3, help="pairs of map runs; the verdict is their median"
    )
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
