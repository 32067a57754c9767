"""One benchmark consumer process, driven by ``bench.throughput`` over stdin/stdout.

``python -m bench.map_worker ours``: our map stage as ``aggregator run`` wires it
(``KafkaSource`` + ``MapStage`` + ``HazelcastStore``, settings from the same
``AGG_*`` variables; no election, reduce, membership or HTTP, which cost a few
calls a second).  It joins the consumer group and reports its assignment, but
hands no record to the map stage until the parent writes ``go``: what it fetched
meanwhile is rewound with ``seek``, so every member starts from the beginning
with the final assignment instead of the first joiner reading alone until the
group settles.  After ``go`` it reports every commit (time, offsets, counters)
and samples its RSS; ``stop`` stops it gracefully and it prints its result.

``python -m bench.map_worker raw``: the ceiling, a bare aiokafka consumer in its
own group with the same fetch settings as ``KafkaSource`` (fetch sizes,
``getmany`` of up to the map stage's batch, the same poll timeout), counting
records until it has ``--expected`` of them.

Every line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from aggregator.adapters.kafka.source import KafkaSource, fetch_limits
from aggregator.adapters.memory.clock import SystemClock
from aggregator.ports.source import SourceRecord
from aggregator.services.map_stage import FETCH_MAX_RECORDS, MapStage
from aggregator.services.pod import new_identity
from aggregator.wiring import production
from aggregator.wiring.compose import pod_settings
from aggregator.wiring.settings import load_settings
from bench.proc import emit, rss_kib

RSS_SAMPLE_S = 0.25
FETCH_TIMEOUT_S = 0.2
"""The map stage's fetch timeout at the default flush interval."""


class GatedSource(KafkaSource):
    """``KafkaSource`` that keeps records back until ``go`` is set, and reports commits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()
        self.first_record_at: float | None = None
        self.on_commit: Callable[[Mapping[int, int]], None] = lambda offsets: None
        self._reported: frozenset[int] | None = None

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        if self.go.is_set():
            records = await super().fetch(max_records, timeout_s)
            if records and self.first_record_at is None:
                self.first_record_at = time.time()
            self._report_assignment()
            return records
        records = await super().fetch(1, timeout_s)  # lets the group rebalance
        for record in records:
            await self.seek(record.partition, record.offset)
        self._report_assignment()
        await asyncio.sleep(0.05)
        return []

    def _report_assignment(self) -> None:
        if self.assignment() != self._reported:
            self._reported = self.assignment()
            emit(assigned=sorted(self._reported), at=time.time(), go=self.go.is_set())

    async def commit(self, offsets: Mapping[int, int]) -> None:
        await super().commit(offsets)
        if self.go.is_set():
            self.on_commit(offsets)


async def _commands(source: GatedSource, stopping: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        command = (await reader.readline()).decode().strip()
        if command == "go":
            source.go.set()
        elif command in ("stop", ""):  # "" = the parent closed stdin
            stopping.set()
            return


async def run_ours() -> dict[str, Any]:
    production.tune_garbage_collector()  # as aggregator run does
    settings = load_settings()
    identity = new_identity(settings.pod_name)
    hazelcast = await production.connect_store(settings, identity)
    store = production.partial_store(settings, hazelcast, identity)
    source = production.kafka_source(
        settings, identity, production.kafka_options(settings), GatedSource
    )
    assert isinstance(source, GatedSource)
    timings = pod_settings(settings)
    stage = MapStage(
        source, store, SystemClock(), timings.fold, flush_interval_s=timings.flush_interval_s
    )
    commits: list[dict[str, Any]] = []
    samples: list[tuple[float, int, int]] = []
    assignments: list[list[int]] = []

    def committed(offsets: Mapping[int, int]) -> None:
        entry = {
            "at": time.time(),
            "offsets": {str(p): o for p, o in offsets.items()},
            "records": stage.stats.records,
            "store_calls": store.stats.calls,
            "store_writes": store.stats.writes,
            "partials_written": store.stats.entries,
            "bytes_written": store.stats.bytes_written,
        }
        commits.append(entry)
        emit(commit=entry)

    source.on_commit = committed
    stopping = asyncio.Event()
    commands = asyncio.create_task(_commands(source, stopping))
    task = asyncio.create_task(stage.run())
    baseline: dict[str, int] = {}
    try:
        go = asyncio.create_task(source.go.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait([go, stop], return_when=asyncio.FIRST_COMPLETED)
        go.cancel()
        stop.cancel()
        baseline = {
            "records": stage.stats.records,
            "store_calls": store.stats.calls,
            "store_writes": store.stats.writes,
            "partials_written": store.stats.entries,
            "bytes_written": store.stats.bytes_written,
        }
        assignments.append(sorted(source.assignment()))
        emit(go=time.time())
        while not stopping.is_set():
            samples.append((time.time(), stage.stats.records, rss_kib()))
            if len(samples) % 20 == 0:
                emit(progress=stage.stats.records, ready=stage.ready)
            if sorted(source.assignment()) != assignments[-1]:
                assignments.append(sorted(source.assignment()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RSS_SAMPLE_S)
            if task.done():
                task.result()  # the map stage died: raise why
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stage.stop()
        commands.cancel()
        await hazelcast.shutdown()
    return {
        "identity": identity,
        "first_record_at": source.first_record_at,
        "baseline": baseline,
        "commits": commits,
        "rss": samples,
        "assignments": assignments,
        "counted": stage.stats.counted,
        "skipped": stage.stats.skipped,
        "dropped": stage.stats.dropped,
        "fenced": stage.stats.fenced,
    }


async def run_raw(bootstrap: str, topic: str, group: str, expected: int) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    per_partition, total = fetch_limits(load_settings().max_message_bytes)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=per_partition,
        fetch_max_bytes=total,
    )
    await consumer.start()
    count = 0
    first: float | None = None
    try:
        while count < expected:
            batches = await consumer.getmany(
                timeout_ms=int(FETCH_TIMEOUT_S * 1000), max_records=FETCH_MAX_RECORDS
            )
            for messages in batches.values():
                if messages and first is None:
                    first = time.time()
                count += len(messages)
        last = time.time()
    finally:
        await consumer.stop()
    return {"records": count, "first_record_at": first, "last_record_at": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.map_worker")
    parser.add_argument("kind", choices=["ours", "raw"])
    parser.add_argument("--bootstrap", help="raw: the brokers")
    parser.add_argument("--topic", help="raw: the topic")
    parser.add_argument("--group", help="raw: the consumer group")
    parser.add_argument("--expected", type=int, default=0, help="raw: records to read")
    args = parser.parse_args(argv)
    logging.basicConfig(  # to stderr, the worker's log: joins, assignments, warnings
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.kind == "ours":
        result = asyncio.run(run_ours())
    else:
        result = asyncio.run(run_raw(args.bootstrap, args.topic, args.group, args.expected))
    emit(result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
