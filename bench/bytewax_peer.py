"""A peer: Bytewax counting per key in a 5-minute sliding window or a 1 s
tumbling window.

Run by ``bench.suite`` in its own virtual environment (``.venv-bytewax``,
``bench/bytewax-requirements.txt``); like ``bench.quix_peer`` it imports
nothing of ours, only the standard library, bytewax and what ``bench.peer_io``
(standard library only) gives every peer.

Bytewax's ``KafkaSource`` reads each partition from its beginning with an
assigned consumer (no consumer group: Bytewax keeps offsets in its own
recovery snapshots, off by default).  With ``tail=False`` (the peer's own
bounded read) a partition ends where the topic ended when it was reached, and
the dataflow ends with the last one.  At that end Bytewax closes every open
window and emits it; ``run_main`` returns once everything is out.

Configuration (Bytewax defaults unless said): one worker in this process
(``run_main``), JSON values decoded with the standard library, the event time
read from the value's ``ts``, the message key (the app) as the window key,
``count_window`` with an ``EventClock`` that waits 30 s (the grace of the other
peers) and windows aligned to the epoch: ``SlidingWindower(length 300 s,
offset --step-ms)``, or ``TumblingWindower`` when the step is the whole window.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import peer_io

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    args = peer_io.arguments("python -m bench.bytewax_peer", argv)

    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import (
        EventClock,
        SlidingWindower,
        TumblingWindower,
        count_window,
    )
    from bytewax.testing import run_main

    tally = peer_io.Tally(args.count)
    flow = Dataflow("bench_peer")
    messages = op.input("kafka", flow, KafkaSource([args.bootstrap], [args.topic], tail=False))

    def decode(message: Any) -> tuple[str, float]:
        tally.seen()
        return message.key.decode(), json.loads(message.value)["ts"]

    events = op.map("decode", messages, decode)
    clock = EventClock(
        ts_getter=lambda event: datetime.fromtimestamp(event[1], UTC),
        wait_for_system_duration=timedelta(milliseconds=args.grace_ms),
    )
    step = timedelta(milliseconds=args.step_ms)
    length = timedelta(milliseconds=args.window_ms)
    windower = (
        TumblingWindower(length=length, align_to=EPOCH)
        if args.step_ms >= args.window_ms
        else SlidingWindower(length=length, offset=step, align_to=EPOCH)
    )
    counted = count_window("count", events, clock, windower, key=lambda event: event[0])

    def emitted(step_id: str, item: tuple[str, tuple[int, int]]) -> None:
        app, (window_id, count) = item
        tally.window(app, window_id * args.step_ms, count)

    def late(step_id: str, item: Any) -> None:
        tally.late += 1

    op.inspect("emitted", counted.down, emitted)
    op.inspect("late", counted.late, late)
    run_main(flow)
    peer_io.report(tally, args.state_dir, ended_at=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(main())
