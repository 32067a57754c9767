"""Reduce tick time and process memory at a given number of distinct keys.

Each key count runs in a fresh process (``python -m bench.reduce_scale --keys
K``) on ``bench.reduce_tick``'s workload: the reducer's window over 300
one-second buckets of 6 partitions, then steady ticks.  The RSS kept is the
process's right after the last steady tick: the window at K keys, the
interpreter and our imports, and the workload's own serialized copy of the
partials (for its baseline, which runs afterwards and is not reported here).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aggregator.core.snapshot import build_snapshot
from bench import reduce_tick
from bench.proc import Child, emit, python_module, rss_kib

BUCKETS = 300


@dataclass(frozen=True)
class ReduceScale:
    keys: int
    p50_ms: float
    p99_ms: float
    ticks: int
    rss_kib: int
    first_ms: float = 0.0
    """The first snapshot after loading the window (the leader's start)."""


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
        float(result.get("first_ms", 0.0)),
    )


def rss_after_each_snapshot() -> list[int]:
    """Make ``bench.reduce_tick`` note the RSS after every snapshot of its first
    window (the steady one; its baseline builds fresh windows)."""
    samples: list[int] = []
    build: Callable[..., Any] = build_snapshot  # what reduce_tick calls
    steady: list[object] = []

    def noted(window: object, *args: Any, **kwargs: Any) -> Any:
        snapshot = build(window, *args, **kwargs)
        if not steady:
            steady.append(window)
        if window is steady[0]:
            samples.append(rss_kib())
        return snapshot

    setattr(reduce_tick, "build_snapshot", noted)  # noqa: B010 (a module global, on purpose)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reduce_scale")
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args(argv)
    rss = rss_after_each_snapshot()
    steady = reduce_tick.run(args.keys, BUCKETS, ticks=args.ticks)[0]
    emit(
        result={
            "p50_ms": steady.p50_ms,
            "p99_ms": steady.p99_ms,
            "rss_kib": rss[-1],
            "first_ms": steady.first_ms,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
