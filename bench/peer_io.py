"""What every peer process shares: its command line and its one JSON line.

The peers (``bench.quix_peer``, ``bench.pathway_peer``, ``bench.bytewax_peer``)
run in environments of their own, so this module imports only the standard
library.  A peer reads a topic that holds the first ``--count`` events of the
workload, counts them per key in windows of ``--window-ms`` every
``--step-ms``, writes every window count it emitted to ``windows.json`` in its
``--state-dir`` (60,000 of them for 200 keys in a 5-minute window: too many for
one line of a pipe), which ``bench.peer_truth`` compares with the workload, and
prints one line ``{"result": {...}}`` with its timings and its RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import defaultdict
from pathlib import Path


def arguments(prog: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--count", type=int, required=True, help="records to process")
    parser.add_argument("--window-ms", type=int, default=300_000)
    parser.add_argument(
        "--step-ms", type=int, default=1_000, help="hop; >= the window: a tumbling window"
    )
    parser.add_argument("--grace-ms", type=int, default=30_000)
    return parser.parse_args(argv)


class Tally:
    """Records processed (first and last at), and the window counts emitted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processed = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.late = 0
        self.windows: dict[str, dict[int, int]] = defaultdict(dict)
        """Key -> window start (epoch ms) -> the count emitted for it (the last one)."""

    def seen(self, records: int = 1) -> bool:
        """Count processed records; True once all ``count`` are."""
        now = time.time()
        if not self.processed:
            self.first_at = now
        self.processed += records
        if self.processed >= self.count and not self.last_at:
            self.last_at = now
        return self.processed >= self.count

    def window(self, key: str, start_ms: int, count: int) -> None:
        self.windows[key][start_ms] = count


WINDOWS_FILE = "windows.json"


def report(tally: Tally, state_dir: str, *, ended_at: float, **extra: object) -> None:
    Path(state_dir, WINDOWS_FILE).write_text(json.dumps(tally.windows))
    result = {
        "processed": tally.processed,
        "first_record_at": tally.first_at,
        "last_record_at": tally.last_at,
        "committed_at": ended_at,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "late": tally.late,
        **extra,
    }
    print(json.dumps({"result": result}), flush=True)
