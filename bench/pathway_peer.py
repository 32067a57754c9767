"""A peer: Pathway counting per key in a 5-minute sliding window or a 1 s
tumbling window.

Run by ``bench.suite`` in its own virtual environment (``.venv-pathway``,
``bench/pathway-requirements.txt``); like ``bench.quix_peer`` it imports
nothing of ours but ``bench.peer_io`` (standard library only).

Pathway's Kafka connector (``pw.io.kafka.read``) in its ``"static"`` mode reads
what the topic holds when the run starts, in a consumer group of its own, and
``pw.run`` returns once the results of all of it are out: the peer's own end
point, the same as the others'.  The table is its JSON format with a schema of
the two fields used: ``app`` (the message key's value, in the value too) and
``ts`` (epoch seconds, the event time, like ours).

Configuration (Pathway defaults unless said): ``windowby(ts,
window=pw.temporal.sliding(hop=step, duration=300 s), instance=app)`` (or
``pw.temporal.tumbling`` when the step is the whole window), ``reduce(count)``,
no behavior (Pathway keeps every window and updates it: exact results, no
cut-off), the default engine threads, no persistence; every change of the
result goes to ``pw.io.subscribe``, which keeps the last count per window.

Pathway processes the read as one batch, so no time of its first record can be
had without a Python call per record.  The peer therefore first runs the same
graph over the same topic from a timestamp a day ahead (it reads nothing):
the time of that idle run is Pathway's start (engine, consumer, group) and
stop.  It reports both runs; the suite counts the records over the real run
less the idle one.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from bench import peer_io


def main(argv: list[str] | None = None) -> int:
    args = peer_io.arguments("python -m bench.pathway_peer", argv)

    import pathway as pw
    from pathway.internals import parse_graph

    class Event(pw.Schema):  # type: ignore[misc]
        app: str
        ts: float

    def run(tally: peer_io.Tally, group: str, after_ms: int | None) -> float:
        """One ``pw.run`` over the topic (from its records stamped ``after_ms``
        on, if given); the seconds it took."""
        events = pw.io.kafka.read(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
            },
            topic=args.topic,
            format="json",
            schema=Event,
            mode="static",
            start_from_timestamp_ms=after_ms,
        )
        step_s, window_s = args.step_ms / 1000, args.window_ms / 1000
        window = (
            pw.temporal.tumbling(duration=window_s)
            if step_s >= window_s
            else pw.temporal.sliding(hop=step_s, duration=window_s)
        )
        counts = events.windowby(events.ts, window=window, instance=events.app).reduce(
            app=pw.this._pw_instance, start=pw.this._pw_window_start, count=pw.reducers.count()
        )
        read = events.reduce(records=pw.reducers.count())

        def on_read(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
            if is_addition:
                tally.seen(row["records"] - tally.processed)

        rows: Counter[tuple[str, float, int]] = Counter()

        def on_count(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
            rows[(row["app"], row["start"], row["count"])] += 1 if is_addition else -1

        pw.io.subscribe(read, on_change=on_read)
        pw.io.subscribe(counts, on_change=on_count)
        started = time.time()
        pw.run(monitoring_level=pw.MonitoringLevel.NONE)
        seconds = time.time() - started
        for (app, start, count), net in rows.items():
            if net > 0:
                tally.window(app, round(start * 1000), count)
        parse_graph.G.clear()
        return seconds

    # Pathway runs the whole batch at once: no time of a first record.  A run
    # that reads nothing (from a day ahead) gives its start and end alone.
    idle = peer_io.Tally(0)
    idle_s = run(idle, f"{args.group}-idle", int(time.time() * 1000) + 86_400_000)
    if idle.processed:
        raise RuntimeError(f"the idle run read {idle.processed} records")
    tally = peer_io.Tally(args.count)
    run_s = run(tally, args.group, None)
    ended = time.time()
    peer_io.report(
        tally, args.state_dir, ended_at=ended, run_started_at=ended - run_s, idle_run_s=idle_s
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
