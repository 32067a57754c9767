"""A new leader's peak memory while it reads every stored partial (the feed's ``open``).

The window of ``bench.reduce_tick`` (300 one-second buckets of 6 partitions, with
``--keys`` distinct keys) is encoded as Hazelcast holds it, then applied to a
fresh ``RollingWindow`` in a child process, two ways:

* ``eager``: every entry decoded first, then applied (what the feed did before);
* ``lazy``: each entry decoded as the window takes it (what the feed does now).

Each child reports its peak RSS (``ru_maxrss``) before and after the read; the
difference is what the read costs on top of the entries' bytes.  Run:
``python -m bench.feed_open [--keys 20000] [--per-bucket 2400]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys

from aggregator.adapters.hazelcast import feed
from aggregator.adapters.hazelcast.codec import encode_partial, partial_key
from aggregator.core.window import RollingWindow
from aggregator.ports.store import PartialKey
from bench.reduce_tick import DIMS, PARTITIONS, _partial

BUCKETS = 300


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, keys: int, per_bucket: int) -> dict[str, float]:
    rng = random.Random(3)
    per_partition = max(1, per_bucket // PARTITIONS)
    entries = [
        (
            partial_key(PartialKey("crash-events", p, bucket)),
            bytes(encode_partial(_partial(rng, bucket, keys, per_partition), "bench")),
        )
        for bucket in range(BUCKETS)
        for p in range(PARTITIONS)
    ]
    gc.collect()
    before = _peak_mib()
    window = RollingWindow(len(DIMS), BUCKETS, 1)
    decoded = feed.decode_entries(entries)
    for key, partial in list(decoded) if mode == "eager" else decoded:
        window.apply(key, partial)
    return {
        "entries_mib": sum(len(blob) for _, blob in entries) / 2**20,
        "before_mib": before,
        "peak_mib": _peak_mib(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed_open", description=__doc__)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--per-bucket", type=int, default=2400)
    parser.add_argument("--child", choices=["eager", "lazy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.keys, args.per_bucket)))
        return 0
    results = {}
    for mode in ("eager", "lazy"):
        argv = [sys.executable, "-m", "bench.feed_open", "--child", mode]
        argv += ["--keys", str(args.keys), "--per-bucket", str(args.per_bucket)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout)
    entries = results["lazy"]["entries_mib"]
    print(
        f"feed open: {BUCKETS} buckets x {PARTITIONS} partitions, {args.keys} keys, "
        f"{entries:.0f} MiB of entries"
    )
    for mode, figures in results.items():
        added = figures["peak_mib"] - figures["before_mib"]
        print(f"  {mode:5}  peak {figures['peak_mib']:7.0f} MiB  (+{added:.0f} MiB for the read)")
    eager = results["eager"]["peak_mib"] - results["eager"]["before_mib"]
    lazy = results["lazy"]["peak_mib"] - results["lazy"]["before_mib"]
    print(f"  the read costs {lazy / eager:.2f}x of decoding everything first")
    return 0 if lazy < eager else 1


if __name__ == "__main__":
    sys.exit(main())
