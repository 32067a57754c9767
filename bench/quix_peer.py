"""The peer: Quix Streams computing a 5-minute hopping-window count per key.

Run by ``bench.suite`` in its own virtual environment (``.venv-peer``): Quix
Streams 3.28 pins pydantic < 2.14 while our kubernetes client needs >= 2.14.2,
so the two cannot share one environment.  This module imports nothing of ours
but ``bench.peer_io`` (standard library only) for that reason.

One process reads the topic (the first ``--count`` events of the workload) from
the earliest offset in a consumer group of its own, with its state in a
temporary folder, and stops after ``--count`` records; it prints one JSON line
(``bench.peer_io``): when the first record was processed, when the last one
was, and when ``app.run`` returned (after its final checkpoint: state flushed,
changelog produced, offsets committed).  With ``.final()`` Quix emits a window
only once a later event closes it, and the workload has none: it emits no
counts, so the suite checks only that it processed every record.

Configuration (Quix defaults unless said): JSON values, the event time read
from the value's ``ts`` (epoch seconds, like ours), the message key (the app)
as the window key, ``hopping_window(duration 300 s, step --step-ms, grace
30 s).count().final()`` (``tumbling_window`` when the step is the whole
window), changelog topics on (the fault tolerance matching our Hazelcast
partials), commit interval 5 s, at-least-once.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from bench import peer_io


def main(argv: list[str] | None = None) -> int:
    args = peer_io.arguments("python -m bench.quix_peer", argv)

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
    tally = peer_io.Tally(args.count)

    def seen(value: Any) -> None:
        if tally.seen():
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
    peer_io.report(tally, args.state_dir, ended_at=done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
