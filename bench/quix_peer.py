"""The peer: Quix Streams computing a 5-minute hopping-window count per key.

Run by ``bench.suite`` in its own virtual environment (``.venv-peer``): Quix
Streams 3.28 pins pydantic < 2.14 while our kubernetes client needs >= 2.14.2,
so the two cannot share one environment.  This module imports nothing of ours
(only the standard library and quixstreams) for that reason.

One process reads the topic from the earliest offset in a consumer group of its
own, with its state in a temporary folder, and stops after ``--count`` records;
it prints one JSON line: when the first record was processed, when the last
one was, and when ``app.run`` returned (after its final checkpoint: state
flushed, changelog produced, offsets committed).

Configuration (Quix defaults unless said): JSON values, the event time read
from the value's ``ts`` (epoch seconds, like ours), the message key (the app)
as the window key, ``hopping_window(duration 300 s, step --step-ms, grace
30 s).count().final()`` (``tumbling_window`` when the step is the whole
window), changelog topics on (the fault tolerance matching our Hazelcast
partials), commit interval 5 s, at-least-once.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_peer")
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
    args = parser.parse_args(argv)

    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )

    def event_time(value: Any, headers: Any, timestamp: int, kind: Any) -> int:
        return int(value["ts"] * 1000)

    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_time)
    progress = {"processed": 0, "first": 0.0, "last": 0.0}

    def seen(value: Any) -> None:
        progress["processed"] += 1
        if progress["processed"] == 1:
            progress["first"] = time.time()
        if progress["processed"] >= args.count:
            progress["last"] = time.time()
            app.stop()

    sdf = app.dataframe(topic).update(seen)
    if args.step_ms >= args.window_ms:
        window = sdf.tumbling_window(duration_ms=args.window_ms, grace_ms=args.grace_ms)
    else:
        window = sdf.hopping_window(
            duration_ms=args.window_ms, step_ms=args.step_ms, grace_ms=args.grace_ms
        )
    window.count().final()
    app.run()
    done = time.time()
    logging.shutdown()
    result = {
        "processed": progress["processed"],
        "first_record_at": progress["first"],
        "last_record_at": progress["last"],
        "committed_at": done,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
