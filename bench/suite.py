"""``python -m bench.suite [--quick] [--events N] [--skip PHASE] [--no-write]``

The end-to-end benchmarks, in one run on the local servers (``python -m infra
up``), side by side on one topic produced once:

- throughput: our map stage (``KafkaSource`` + ``MapStage`` + ``HazelcastStore``)
  in 1, 2 and 3 processes of one consumer group, the raw aiokafka ceiling, and
  Hazelcast calls per flush and per 1,000 events; the RSS of the 1-process run
  as the events go by;
- peer: Quix Streams, Pathway and Bytewax (``bench.peers``) counting per key in
  a 1 s tumbling window and in a 5-minute hopping window with a 1 s step, one
  process each, over a topic of the first N events, their counts checked;
- latency: event-to-dashboard latency of ``aggregator run`` pods at the default
  1 s tick (``bench.latency`` explains the method);
- reduce: reduce tick p50/p99 and process RSS at 1k, 10k and 100k keys;
- failover: ``bench.failover`` (SIGTERM and SIGKILL of the leader).

It prints a table, draws docs/benchmarks.png and rewrites the ``bench:suite``
block of docs/benchmarks.md.  ``--quick`` is a smoke test (small sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import failover, kafka_load, latency, latency_path, reduce_scale, throughput
from bench.doc import DOC, write_block
from bench.latency import LatencyRun
from bench.peer_truth import window_counts
from bench.peers import PEERS, run_peer
from bench.reduce_scale import ReduceScale
from bench.throughput import MapRun, Rate, Servers
from bench.workload import EventPool
from harness.failover import Failover
from harness.pods import Timings

PHASES = ("throughput", "peer", "latency", "reduce", "failover")
FIGURE = DOC.with_name("benchmarks.png")
PARTITIONS = 6
SPREAD_MS = 2_000
"""Event times of the workload: two one-second buckets, interleaved."""

TARGET_MAP_PER_PROCESS = 100_000
TARGET_CEILING_SHARE = 0.5
TARGET_PEER_RATIO = 2.0
TARGET_LATENCY_P99_S = 1.0
TARGET_TICK_P99_MS = 50.0
TARGET_TICK_KEYS = 10_000
RSS_FLAT_GROWTH = 0.10
"""RSS counts as flat when the end is within 10 % of the start."""
RSS_START_SHARE = 0.1
"""The start of the RSS comparison: once a tenth of the events are folded."""
PEER_COLOURS = {"Quix": "#e07b39", "Pathway": "#8e5bc4", "Bytewax": "#b5892d"}
"""The figure's bar colour per peer (by the first word of its label)."""


@dataclass(frozen=True)
class Plan:
    events: int
    processes: tuple[int, ...]
    peer_tumbling_events: int
    peer_hopping_events: int
    latency_seconds: int
    latency_rate: int
    latency_warmup: int
    reduce_keys: tuple[int, ...]
    reduce_ticks: int
    failover_runs: int
    failover_timings: Timings

    @classmethod
    def full(cls) -> Plan:
        return cls(
            events=1_500_000,
            processes=(1, 2, 3),
            peer_tumbling_events=300_000,
            peer_hopping_events=10_000,
            latency_seconds=60,
            latency_rate=2_000,
            latency_warmup=5,
            reduce_keys=(1_000, 10_000, 100_000),
            reduce_ticks=60,
            failover_runs=1,
            failover_timings=Timings(15, 10, 2),
        )

    @classmethod
    def quick(cls) -> Plan:
        return dataclasses.replace(
            cls.full(),
            events=150_000,
            peer_tumbling_events=30_000,
            peer_hopping_events=2_000,
            latency_seconds=12,
            latency_rate=1_000,
            latency_warmup=3,
            reduce_ticks=10,
            failover_timings=Timings(4, 3, 1),
        )


@dataclass
class Results:
    produce_s: float = 0.0
    raw: Rate | None = None
    maps: list[MapRun] = field(default_factory=list)
    peers: list[Rate] = field(default_factory=list)
    latency: LatencyRun | None = None
    latency_baseline: LatencyRun | None = None
    """The same measurement at ``latency.BASELINE_SCHEDULE``."""
    reduce: list[ReduceScale] = field(default_factory=list)
    failover: list[Failover] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] | None = None
    """The machine's 1-minute load average at the start and at the end of the run."""


def say(text: str) -> None:
    print(text, flush=True)


async def run(plan: Plan, phases: set[str], logs: Path) -> Results:
    kubeconfig, bootstrap, members, cluster_name = failover.servers(
        kube=bool(phases & {"latency", "failover"})
    )
    results = Results()
    prefix = f"bench{secrets.token_hex(3)}"
    if phases & {"throughput", "peer"}:
        topic = f"{prefix}-events"
        servers = Servers(bootstrap, members, cluster_name)
        try:
            await _throughput(plan, phases, servers, topic, prefix, logs, results)
        finally:
            await kafka_load.delete_topics(bootstrap, prefix)
    if "latency" in phases:
        for name, environment in (
            ("the schedule before (baseline)", latency.BASELINE_SCHEDULE),
            ("the default schedule", {}),
        ):
            say(f"latency, {name}: {plan.latency_seconds} s at {plan.latency_rate:,} events/s")
            run_ = await latency.measure(
                kubeconfig, bootstrap, members, cluster_name, logs,
                seconds=plan.latency_seconds, rate=plan.latency_rate, warmup=plan.latency_warmup,
                environment=environment,
            )  # fmt: skip
            if environment:
                results.latency_baseline = run_
            else:
                results.latency = run_
            say(
                f"  p50 {run_.p50:.2f} s, p99 {run_.p99:.2f} s ({len(run_.latencies)} samples; "
                f"{run_.missing} never complete on a dashboard); Hazelcast "
                f"{run_.hazelcast_calls_per_s:.1f} calls/s"
            )
            say("\n".join(latency_path.describe(run_.journeys)))
            if run_.missing:
                results.notes.append(
                    f"Latency ({name}): {run_.missing} (batch, dashboard) pairs never showed "
                    "their second complete (lost, counted twice, or later than the run's end)."
                )
    if "reduce" in phases:
        for keys in plan.reduce_keys:
            scale = await reduce_scale.measure(keys, plan.reduce_ticks, logs)
            results.reduce.append(scale)
            say(
                f"reduce tick at {keys:,} keys: p50 {scale.p50_ms:.1f} ms, "
                f"p99 {scale.p99_ms:.1f} ms, RSS {scale.rss_kib / 1024:.0f} MiB"
            )
    if "failover" in phases:
        timings = plan.failover_timings
        say(f"failover: {plan.failover_runs} run(s) at {timings.label()}")
        results.failover = await failover.measure(timings, plan.failover_runs, logs)
    return results


async def _throughput(
    plan: Plan,
    phases: set[str],
    servers: Servers,
    topic: str,
    prefix: str,
    logs: Path,
    results: Results,
) -> None:
    bootstrap = servers.bootstrap
    base_ms = int(time.time()) * 1000  # on a second: the events fill exactly 2 buckets
    say(f"producing {plan.events:,} events into {topic} ({PARTITIONS} partitions)")
    pool = EventPool()
    events = pool.events(plan.events, base_ms, SPREAD_MS)
    results.produce_s = await kafka_load.produce(bootstrap, topic, events, PARTITIONS)
    ends = await kafka_load.end_offsets(bootstrap, topic)
    say(f"  {sum(ends.values()):,} records in {results.produce_s:.1f} s")
    if "throughput" in phases:
        results.raw = await throughput.run_raw(bootstrap, topic, plan.events, prefix, logs)
        say(f"raw aiokafka consumer: {results.raw.events_per_s:,.0f} events/s")
        for processes in plan.processes:
            run_ = await throughput.run_ours(servers, topic, ends, processes, prefix, logs)
            results.maps.append(run_)
            say(
                f"our map stage, {processes} process(es): {run_.events_per_s:,.0f} events/s "
                f"({run_.per_process_events_per_s:,.0f} per process); Hazelcast "
                f"{run_.calls_per_flush:.1f} calls per flush, "
                f"{run_.calls_per_1000_events:.2f} per 1,000 events"
            )
            if run_.reassigned:
                results.notes.append(
                    f"The {processes}-process run saw {run_.reassigned} reassignment(s) "
                    "after the start (a rebalance during the measurement)."
                )
    if "peer" in phases:
        await _peers(plan, bootstrap, pool, base_ms, prefix, logs, results)


async def _peers(
    plan: Plan,
    bootstrap: str,
    pool: EventPool,
    base_ms: int,
    prefix: str,
    logs: Path,
    results: Results,
) -> None:
    """Each peer over a topic of the first N events of the workload (the same
    events, partitions and keys), which it reads to the end, for each window."""
    ready = []
    for peer in PEERS:
        if peer.available():
            ready.append(peer)
        else:
            say(peer.missing())
            results.notes.append(peer.missing())
    if not ready:
        return
    topics: dict[int, str] = {}
    for count, window_ms, step_ms in (
        (plan.peer_tumbling_events, 1_000, 1_000),
        (plan.peer_hopping_events, 300_000, 1_000),
    ):
        count = min(count, plan.events)
        if count not in topics:
            topics[count] = topic = f"{prefix}-first{count}"
            say(f"producing the first {count:,} events into {topic} for the peers")
            await kafka_load.produce(
                bootstrap, topic, pool.events(count, base_ms, SPREAD_MS), PARTITIONS
            )
        truth = window_counts(pool.events(count, base_ms, SPREAD_MS), window_ms, step_ms)
        for peer in ready:
            rate = await run_peer(
                peer, bootstrap, topics[count], truth, count, window_ms, step_ms, prefix, logs
            )
            results.peers.append(rate)
            say(
                f"{rate.name}: {rate.events_per_s:,.0f} events/s ({count:,} events; {rate.checked})"
            )


# -- the report ------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def rss_start_end(run_: MapRun) -> tuple[int, int] | None:
    """RSS (KiB) once a tenth of the events were folded, and at the end."""
    started = [kib for _, records, kib in run_.rss if records >= RSS_START_SHARE * run_.records]
    if not started:
        return None
    return started[0], run_.rss[-1][2]


def table(plan: Plan, results: Results) -> list[str]:
    lines = [
        "| measure | ours | reference (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    raw = results.raw
    one = next((r for r in results.maps if r.processes == 1), None)
    for run_ in results.maps:
        per = run_.per_process_events_per_s
        share = per / raw.events_per_s if raw else math.nan
        if run_.processes == 1:
            compared = f"{share:.0%} of the ceiling"
            goal = f">= {TARGET_MAP_PER_PROCESS:,} and >= {TARGET_CEILING_SHARE:.0%}"
            verdict = _met(per >= TARGET_MAP_PER_PROCESS and share >= TARGET_CEILING_SHARE)
        else:  # the 2 cores are shared with the broker and the members: read the total
            together = run_.events_per_s / one.events_per_s if one else math.nan
            compared = f"{share:.0%} of the ceiling each; {together:.2f}x one process together"
            goal, verdict = "- (2 cores shared)", "-"
        lines.append(
            f"| map stage, {run_.processes} process{'es' if run_.processes > 1 else ''}: "
            f"events/s per process (all together) | {per:,.0f} ({run_.events_per_s:,.0f}) "
            f"| raw aiokafka, 1 process: {raw.events_per_s if raw else math.nan:,.0f} "
            f"| {compared} | {goal} | {verdict} |"
        )
    for peer in results.peers:
        if one is None:
            break
        ratio = one.per_process_events_per_s / peer.events_per_s
        lines.append(
            f"| map stage vs a peer, events/s per process | "
            f"{one.per_process_events_per_s:,.0f} | {peer.name}: {peer.events_per_s:,.0f} "
            f"({peer.records:,} events; {peer.checked}) | {ratio:,.1f}x "
            f"| >= {TARGET_PEER_RATIO:g}x | {_met(ratio >= TARGET_PEER_RATIO)} |"
        )
    for run_ in results.maps:
        lines.append(
            f"| Hazelcast calls per flush / per 1,000 events, {run_.processes} "
            f"process{'es' if run_.processes > 1 else ''} | {run_.calls_per_flush:.1f} / "
            f"{run_.calls_per_1000_events:.2f} | {run_.flushes:,} flushes, "
            f"{run_.partials_written:,} partials written | - | - | - |"
        )
    if one is not None and (rss := rss_start_end(one)) is not None:
        start, end = rss
        growth = (end - start) / start
        lines.append(
            f"| map process RSS while {one.records:,} events flow (fixed keys), "
            f"MiB at {RSS_START_SHARE:.0%} / 100 % of them | {start / 1024:.0f} / "
            f"{end / 1024:.0f} | - | {growth:+.1%} | flat (within "
            f"{RSS_FLAT_GROWTH:.0%}) | {_met(abs(growth) <= RSS_FLAT_GROWTH)} |"
        )
    lat, base = results.latency, results.latency_baseline
    if lat is not None:
        met = bool(lat.latencies) and not lat.missing and lat.p99 <= TARGET_LATENCY_P99_S
        if base is not None:
            met = met and lat.hazelcast_calls_per_s <= base.hazelcast_calls_per_s
        before = (
            f"schedule before: {base.p50:.2f} / {base.p99:.2f}, "
            f"{base.hazelcast_calls_per_s:.1f} calls/s"
            if base is not None
            else "-"
        )
        change = f"{lat.p99 / base.p99:.2f}x p99" if base is not None else "-"
        lines.append(
            f"| event-to-dashboard latency p50 / p99, s; Hazelcast calls/s ({lat.pods} pods, "
            f"tick 1 s, flush 0.5 s, {lat.rate:,} events/s, {len(lat.latencies)} samples"
            f"{f', {lat.missing} never complete' if lat.missing else ''}) "
            f"| {lat.p50:.2f} / {lat.p99:.2f}, {lat.hazelcast_calls_per_s:.1f} calls/s "
            f"| {before} | {change} | p99 <= {TARGET_LATENCY_P99_S:g} s, calls/s <= before "
            f"| {_met(met)} |"
        )
    for scale in results.reduce:
        target = scale.keys == TARGET_TICK_KEYS
        lines.append(
            f"| reduce tick p50 / p99 ms, RSS MiB: {scale.keys:,} keys x 300 buckets "
            f"| {scale.p50_ms:.1f} / {scale.p99_ms:.1f}, {scale.rss_kib / 1024:.0f} MiB "
            f"| - | - | {f'p99 <= {TARGET_TICK_P99_MS:g} ms' if target else '-'} "
            f"| {_met(scale.p99_ms <= TARGET_TICK_P99_MS) if target else '-'} |"
        )
    timings = plan.failover_timings
    for how, bound in (
        ("SIGTERM", failover.GRACEFUL_BOUND_S),
        ("SIGKILL", failover.crash_bound(timings)),
    ):
        seconds = [o.seconds for o in results.failover if o.how == how]
        if seconds:
            lines.append(
                f"| failover after {how} of the leader, s ({timings.label()}, "
                f"{len(seconds)} run{'s' if len(seconds) > 1 else ''}; max) "
                f"| {max(seconds):.2f} | - | - | <= {bound:g} s | {_met(max(seconds) <= bound)} |"
            )
    return lines


def body(plan: Plan, results: Results, command: str, figure: bool) -> str:
    parts = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}; command: `{command}`."
        + (
            f" Load average (1 min) {results.load[0]:.1f} at the start, "
            f"{results.load[1]:.1f} at the end."
            if results.load
            else ""
        ),
        "",
    ]
    if results.produce_s:
        parts += [
            f"Workload: {plan.events:,} synthetic crash events (~125 bytes of JSON each, "
            f"200 apps) produced once into a {PARTITIONS}-partition topic "
            f"({results.produce_s:.1f} s); our map stage and the raw consumer read that "
            "same topic from the beginning"
            + (
                f", the peers a topic of its first {plan.peer_tumbling_events:,} or "
                f"{plan.peer_hopping_events:,} events."
                if results.peers
                else "."
            ),
            "",
        ]
    parts += table(plan, results)
    if results.notes:
        parts += ["", *[f"- {note}" for note in results.notes]]
    if figure:
        parts += ["", f"![benchmark figures]({FIGURE.name})"]
    return "\n".join(parts)


# -- the figure ------------------------------------------------------------------------


def draw(results: Results, path: Path) -> bool:
    """docs/benchmarks.png; False (and why) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("figure skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (rates, lat_ax), (tick_ax, rss_ax) = axes

    names, values, colours = [], [], []
    if results.raw is not None:
        names.append("raw aiokafka\n(ceiling)")
        values.append(results.raw.events_per_s)
        colours.append("#999999")
    for run_ in results.maps:
        names.append(f"ours, {run_.processes} proc.\n(per process)")
        values.append(run_.per_process_events_per_s)
        colours.append("#2a6fdb")
    for peer in results.peers:
        names.append(peer.label)
        values.append(peer.events_per_s)
        colours.append(PEER_COLOURS.get(peer.label.split(",")[0], "#e07b39"))
    if values:
        rates.bar(range(len(values)), values, color=colours)
        rates.set_xticks(range(len(values)), names, fontsize=7, rotation=40, ha="right")
        rates.set_yscale("log")
        rates.axhline(TARGET_MAP_PER_PROCESS, color="green", linestyle="--", linewidth=1)
        for x, value in enumerate(values):
            rates.text(x, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=7)
    rates.set_title("Events/s per process (log scale; dashed: target 100k)")

    for timed, label, colour in (
        (results.latency_baseline, "schedule before", "#999999"),
        (results.latency, "default schedule", "#2a6fdb"),
    ):
        if timed is None or not timed.latencies:
            continue
        ordered = sorted(timed.latencies)
        share = [(i + 1) / len(ordered) for i in range(len(ordered))]
        lat_ax.step(ordered, share, where="post", color=colour, label=label)
        lat_ax.axvline(TARGET_LATENCY_P99_S, color="green", linestyle="--", linewidth=1)
        lat_ax.axhline(0.99, color="#999999", linestyle=":", linewidth=1)
        lat_ax.set_xlabel("seconds from produce to the dashboard")
        lat_ax.set_ylabel("share of events")
        lat_ax.legend(loc="lower right", fontsize=8)
    lat_ax.set_title("Event-to-dashboard latency, tick 1 s (dashed: p99 target)")

    if results.reduce:
        keys = [s.keys for s in results.reduce]
        tick_ax.plot(keys, [s.p50_ms for s in results.reduce], "o-", label="tick p50")
        tick_ax.plot(keys, [s.p99_ms for s in results.reduce], "s-", label="tick p99")
        tick_ax.axhline(TARGET_TICK_P99_MS, color="green", linestyle="--", linewidth=1)
        tick_ax.set_xscale("log")
        tick_ax.set_xlabel("distinct keys")
        tick_ax.set_ylabel("ms")
        memory = tick_ax.twinx()
        memory.plot(keys, [s.rss_kib / 1024 for s in results.reduce], "^:", color="#777777")
        memory.set_ylabel("RSS, MiB (dotted)")
        memory.set_ylim(bottom=0, top=1.2 * max(s.rss_kib / 1024 for s in results.reduce))
        tick_ax.set_ylim(bottom=0)
        tick_ax.legend(loc="upper left", fontsize=8)
    tick_ax.set_title("Reduce tick vs keys (300 buckets; dashed: p99 target)")

    one = next((r for r in results.maps if r.processes == 1), None)
    if one is not None and one.rss:
        rss_ax.plot(
            [records / 1e6 for _, records, _ in one.rss],
            [kib / 1024 for _, _, kib in one.rss],
            ".-",
            color="#2a6fdb",
        )
        rss_ax.set_xlabel("million events folded")
        rss_ax.set_ylabel("RSS, MiB")
        rss_ax.set_ylim(bottom=0, top=1.2 * max(kib / 1024 for _, _, kib in one.rss))
    rss_ax.set_title("Map process RSS as events flow (1 process, fixed keys)")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- the command -----------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--events", type=int, help="events in the topic (default 1,500,000)")
    parser.add_argument(
        "--skip", action="append", choices=PHASES, default=[], help="leave a phase out"
    )
    parser.add_argument("--failover-runs", type=int, help="runs of each signal (default 1)")
    parser.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.events:
        plan = dataclasses.replace(plan, events=args.events)
    if args.failover_runs:
        plan = dataclasses.replace(plan, failover_runs=args.failover_runs)
    phases = set(PHASES) - set(args.skip)
    signal.signal(signal.SIGTERM, _interrupt)  # so the children are stopped on the way out
    logs = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    say(f"logs under {logs}")
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    results = asyncio.run(run(plan, phases, logs))
    results.load = (load_start, os.getloadavg()[0])
    say(f"done in {time.monotonic() - started:.0f} s\n")
    command = " ".join(["python -m bench.suite", *(argv if argv is not None else sys.argv[1:])])
    lines = table(plan, results)
    say("\n".join(lines + [f"- {note}" for note in results.notes]))
    if args.no_write:
        return 0
    figure = draw(results, FIGURE)
    write_block(
        "suite",
        body(plan, results, command, figure),
        "## End to end: Kafka, Hazelcast, the peers (`python -m bench.suite`)",
    )
    say(f"\nwritten to {DOC}" + (f" and {FIGURE}" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
