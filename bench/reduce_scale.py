"""Reduce tick time and process memory at a given number of distinct keys.

Each key count runs in a fresh process (``python -m bench.reduce_scale --keys
K``), so its RSS is the reducer's window at K keys over 300 one-second buckets
of 6 partitions (``bench.reduce_tick``'s workload, without its baseline) plus
the interpreter and our imports.  The figure kept is the peak (VmHWM): the
window is gone, and its memory maybe returned, once the run is over.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import reduce_tick
from bench.proc import Child, emit, python_module, rss_kib, status_kib

BUCKETS = 300


@dataclass(frozen=True)
class ReduceScale:
    keys: int
    p50_ms: float
    p99_ms: float
    ticks: int
    rss_kib: int
    peak_kib: int


async def measure(keys: int, ticks: int, logs: Path) -> ReduceScale:
    child = await Child.start(
        python_module("bench.reduce_scale", "--keys", str(keys), "--ticks", str(ticks)),
        logs / f"reduce-{keys}.log",
    )
    result = await child.finish(600)
    return ReduceScale(
        keys,
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        ticks,
        int(result["rss_kib"]),
        int(result["peak_kib"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reduce_scale")
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args(argv)
    (times,) = reduce_tick.run(args.keys, BUCKETS, ticks=args.ticks, baseline=False)
    emit(
        result={
            "p50_ms": times.p50_ms,
            "p99_ms": times.p99_ms,
            "rss_kib": rss_kib(),
            # the window is freed by now: the peak is the figure
            "peak_kib": status_kib("VmHWM"),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
