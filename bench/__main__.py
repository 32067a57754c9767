"""``python -m bench [--quick] [--no-write]``: run the core benchmarks, print a
table, and rewrite the generated section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from bench import decode_fold, reduce_tick
from bench.doc import DOC, write_block

TARGET_EVENTS_PER_S = 300_000
TARGET_TICK_P99_MS = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    events = 50_000 if args.quick else 400_000
    ticks = 10 if args.quick else 60

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"command: `python -m bench{' --quick' if args.quick else ''}`.",
        "",
        "| benchmark | ours | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    ours, base = decode_fold.run(events)
    lines.append(
        f"| decode + fold, events/s on one core ({events:,} events) "
        f"| {ours.per_second:,.0f} | {base.per_second:,.0f} "
        f"| {ours.per_second / base.per_second:.2f}x "
        f"| >= {TARGET_EVENTS_PER_S:,} | {_met(ours.per_second >= TARGET_EVENTS_PER_S)} |"
    )
    firsts: list[str] = []
    for keys in (1_000, 10_000):
        inc, full = reduce_tick.run(keys, 300, ticks=ticks)
        firsts.append(f"{inc.first_ms:,.0f} ms at {keys:,} keys")
        met = "yes" if inc.p99_ms <= TARGET_TICK_P99_MS else "no"
        target = f"p99 <= {TARGET_TICK_P99_MS:g} ms" if keys == 10_000 else "-"
        lines.append(
            f"| reduce tick, {keys:,} keys x 300 buckets, p50 / p99 ms "
            f"| {inc.p50_ms:.1f} / {inc.p99_ms:.1f} | {full.p50_ms:.0f} / {full.p99_ms:.0f} "
            f"| {full.p50_ms / inc.p50_ms:.0f}x faster | {target} "
            f"| {met if keys == 10_000 else '-'} |"
        )
    lines += [
        "",
        "Decode + fold: best of 3 runs over the same messages (ours and the baseline"
        " alternating), rolled up every 25,000, timed in process CPU time so that other"
        " load on the machine does not count; the input batch is frozen out of the garbage"
        " collector (`gc.freeze`), since a consumer holds one fetch (at most 5,000"
        " records), not the whole batch. Reduce ticks are wall-clock times.",
        f"Reduce tick: {ticks} ticks after the leader's start, each applying 6 changed"
        " partials, advancing one bucket and building the snapshot (top 10). The first"
        " snapshot after loading the window builds the top keys' histograms and distinct"
        f" registers from the stored partials: {', '.join(firsts)} (part of the start,"
        " like the load itself, not counted as a tick).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_block("core", table, "## Core (decode, fold, reduce)")
        print(f"\nwritten to {DOC}")
    return 0


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


if __name__ == "__main__":
    sys.exit(main())
