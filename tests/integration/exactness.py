"""Exact counts against the real servers: known messages in, the brute-force answer out.

Used by test_map_exactness.py and test_chaos.py.

* ``StreamMaker``: a seeded stream of messages, each unique (it carries a ``seq``
  field, which the decoder ignores), each with the outcome the decoding rules give
  it: a valid event of many shapes (epoch or RFC 3339 time, absent or null
  dimensions, no value, no device, extra fields), or a malformed message of every
  rejection kind (``invalid_json``, ``not_object``, ``missing_ts``, ``invalid_ts``,
  ``invalid_field``, ``too_large``).  The expected outcome is decided here, by
  construction, never by the decoder under test.
* ``SteadyProducer``: sends them at a steady rate in the background, to chosen
  partitions, with the record timestamp equal to the event time (so nothing is
  late or future), and re-sends what the broker did not acknowledge.
* ``read_topic``: the topic as it finally is.  The truth is computed over those
  messages, so a re-sent message that had landed twice counts twice, as it must.
* ``Truth``: the brute-force answer per (partition, bucket), per bucket, for the
  dead-letter topic and for a snapshot whose window covers everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aggregator.adapters.hazelcast import HazelcastFeed, connect
from aggregator.core.partial import Agg, Partial, merged
from aggregator.ports.store import PartialKey
from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer
from tests.integration.cluster_harness import (
    Cluster,
    SnapshotRecorder,
    fencing_violations,
)
from tests.oracle import brute_partial, distinct_ok, nearest_rank_value, quantile_ok

DIMENSIONS = ("app", "platform", "crash_type")
APPS = tuple(f"app-{i:02d}" for i in range(12))
PLATFORMS = ("android", "ios", "web", "macos", "windows")
CRASH_TYPES = ("anr", "oom", "null_pointer", "sigsegv", "sigabrt", "unhandled_promise")
UNKNOWN = "unknown"
MAX_MESSAGE_BYTES = 2048
TOP_N = 50
"""More than the keys of any dimension (12 apps + "unknown"): the snapshot shows all."""

REASONS = ("invalid_json", "not_object", "missing_ts", "invalid_ts", "invalid_field", "too_large")


def pod_environment(window_seconds: int) -> dict[str, str]:
    """The ``AGG_`` settings the exactness scenarios run their pods with."""
    return {
        "AGG_WINDOW_SECONDS": str(window_seconds),
        "AGG_TOP_N": str(TOP_N),
        "AGG_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "AGG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
    }


# -- the stream --------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedEvent:
    """What a valid message must count as (the decoding rules, applied by hand)."""

    ts_ms: int
    keys: tuple[str, ...]
    value: float | None
    distinct: str | None

    @property
    def bucket(self) -> int:
        return self.ts_ms // 1000


@dataclass(frozen=True)
class Planned:
    seq: int
    value: bytes
    partition: int
    timestamp_ms: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str | None
    """None for a valid event, else the rejection reason it must get."""
    event: ExpectedEvent | None


class StreamMaker:
    """Seeded messages; ``plan`` maps every value made to its expected outcome."""

    def __init__(self, seed: int, *, partitions: int = 6, bad_fraction: float = 0.08) -> None:
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.bad_fraction = bad_fraction
        self.plan: dict[bytes, Planned] = {}
        self._seq = 0

    def make(self, now: float) -> Planned:
        rng = self.rng
        self._seq += 1
        seq = self._seq
        ts_ms = round(now * 1000)
        event: ExpectedEvent | None = None
        if rng.random() < self.bad_fraction:
            reason = REASONS[seq % len(REASONS)]  # every kind, evenly
            value = self._malformed(reason, seq, ts_ms)
        else:
            reason = None
            value, event = self._valid(seq, ts_ms)
        key = f"k{seq}".encode() if rng.random() < 0.5 else None
        headers = (("trace", f"t{seq}".encode()),) if rng.random() < 0.3 else ()
        planned = Planned(
            seq, value, rng.randrange(self.partitions), ts_ms, key, headers, reason, event
        )
        if value in self.plan:
            raise AssertionError(f"message made twice: {value!r}")
        self.plan[value] = planned
        return planned

    def _valid(self, seq: int, ts_ms: int) -> tuple[bytes, ExpectedEvent]:
        rng = self.rng
        doc: dict[str, Any] = {"seq": seq, "ts": _time_field(rng, ts_ms)}
        keys = tuple(
            self._optional(doc, name, functools.partial(rng.choice, choices)) or UNKNOWN
            for name, choices in zip(DIMENSIONS, (APPS, PLATFORMS, CRASH_TYPES), strict=True)
        )
        value = self._optional(doc, "duration_ms", self._duration)
        device = self._optional(doc, "device_id", lambda: f"device-{rng.randrange(3000)}")
        if rng.random() < 0.1:
            doc["extra"] = {"build": seq % 7, "tags": ["a", "b"]}
        number = None if value is None else float(value)
        return json.dumps(doc).encode(), ExpectedEvent(ts_ms, keys, number, device)

    def _optional(self, doc: dict[str, Any], name: str, make: Callable[[], Any]) -> Any:
        """Leave the field out (5 %), make it null (3 %), or set it; its value or None."""
        shape = self.rng.random()
        if shape < 0.05:
            return None
        doc[name] = None if shape < 0.08 else make()
        return doc[name]

    def _duration(self) -> float | int:
        shape = self.rng.random()
        if shape < 0.03:
            return 0
        if shape < 0.15:
            return self.rng.randrange(1, 5000)
        return round(self.rng.lognormvariate(5.0, 0.9), 2)

    def _malformed(self, reason: str, seq: int, ts_ms: int) -> bytes:
        variant = self.rng.randrange(4)
        ts = ts_ms / 1000
        if reason == "invalid_json":
            return (
                b'{"seq": %d, "ts": 17\xff}' % seq,
                b'{"seq": %d, "ts": ' % seq,
                b'{"seq": %d, "ts": %.3f, "app": "\xc3\x28"}' % (seq, ts),
                b"crash %d" % seq,
            )[variant]
        if reason == "not_object":
            return (b"[%d, %.3f]" % (seq, ts), b'"crash %d"' % seq, b"%d" % seq, b"[[%d]]" % seq)[
                variant
            ]
        if reason == "missing_ts":
            return (
                b'{"seq": %d}' % seq,
                b'{"seq": %d, "app": "app-00"}' % seq,
                b'{"seq": %d, "time": %.3f}' % (seq, ts),
                b'{"seq": %d, "TS": %.3f}' % (seq, ts),
            )[variant]
        if reason == "invalid_ts":
            return (
                b'{"seq": %d, "ts": "yesterday"}' % seq,
                b'{"seq": %d, "ts": true}' % seq,
                b'{"seq": %d, "ts": 1e400, "app": "app-01"}' % seq,
                b'{"seq": %d, "ts": "2026-01-01T00:00:00"}' % seq,  # no zone
            )[variant]
        if reason == "invalid_field":
            return (
                b'{"seq": %d, "ts": %.3f, "duration_ms": "slow"}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "duration_ms": -1}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "app": 3}' % (seq, ts),
                b'{"seq": %d, "ts": %.3f, "device_id": ["d"]}' % (seq, ts),
            )[variant]
        # too_large: otherwise a valid event
        head = b'{"seq": %d, "ts": %.3f, "app": "app-00", "pad": "' % (seq, ts)
        return head + b"x" * (MAX_MESSAGE_BYTES + variant * 100) + b'"}'


def _time_field(rng: random.Random, ts_ms: int) -> float | str:
    """Epoch seconds, or RFC 3339 in UTC or another zone; always the same instant."""
    shape = rng.random()
    if shape < 0.7:
        return ts_ms / 1000
    at = datetime.fromtimestamp(ts_ms / 1000, UTC)
    if shape < 0.85:
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(
        timespec="milliseconds"
    )


class SteadyProducer:
    """Sends ``maker``'s messages at ``rate`` per second until ``stop()``; what the
    broker does not acknowledge is sent again (a broker restart stalls it, and it
    catches up afterwards).  Every wait is bounded; a client that makes no progress
    for ``STUCK_S`` is replaced by a new one."""

    SEND_S = 15.0
    STUCK_S = 30.0

    def __init__(self, bootstrap: str, topic: str, maker: StreamMaker, *, rate: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.maker = maker
        self.rate = rate
        self.delivered: list[tuple[Planned, int]] = []
        """Acknowledged sends, with the offset the broker gave them."""
        self.resent: set[int] = set()
        """Sequence numbers of the messages that had to be sent more than once."""
        self.clients = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout_s: float = 120.0) -> None:
        """Stop making messages; return once everything made is acknowledged."""
        self._stop.set()
        if self._task is not None:
            async with asyncio.timeout(timeout_s):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        made = 0
        unsent: list[Planned] = []
        producer = await self._connect()
        progress_at = loop.time()
        try:
            while unsent or not self._stop.is_set():
                if not self._stop.is_set():
                    due = int((loop.time() - started) * self.rate) + 1
                    unsent += [self.maker.make(time.time()) for _ in range(made, due)]
                    made = max(made, due)
                before = len(unsent)
                unsent = await self._send(producer, unsent)
                if len(unsent) < before or not unsent:
                    progress_at = loop.time()
                if loop.time() - progress_at > self.STUCK_S:
                    await self._close(producer)
                    producer = await self._connect()
                    progress_at = loop.time()
                if unsent:
                    await asyncio.sleep(0.5)
                else:
                    await asyncio.sleep(max(0.0, made / self.rate - (loop.time() - started)))
        finally:
            await self._close(producer)

    async def _connect(self) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                # not idempotent: aiokafka's idempotent producer wedges for good once a
                # batch expires in a broker outage (see adapters/kafka/dead_letters.py)
                enable_idempotence=False,
                linger_ms=5,
                request_timeout_ms=10_000,
            )
            try:
                async with asyncio.timeout(self.SEND_S):
                    await producer.start()
            except Exception:
                await self._close(producer)
                await asyncio.sleep(1.0)
                continue
            self.clients += 1
            return producer

    async def _close(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.SEND_S):
                await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, batch: list[Planned]) -> list[Planned]:
        """Send a batch; return what was not acknowledged within ``SEND_S``."""
        sends: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.SEND_S):
                for planned in batch:
                    sends.append(
                        await producer.send(
                            self.topic,
                            planned.value,
                            key=planned.key,
                            partition=planned.partition,
                            timestamp_ms=planned.timestamp_ms,
                            headers=list(planned.headers),
                        )
                    )
        except Exception:
            pass  # what was not handed to the client is sent again
        if sends:
            await asyncio.wait(sends, timeout=self.SEND_S)
        failed = batch[len(sends) :]
        for planned, sent in zip(batch, sends, strict=False):
            if sent.done() and not sent.cancelled() and sent.exception() is None:
                self.delivered.append((planned, int(sent.result().offset)))
            else:
                failed.append(planned)
        self.resent.update(planned.seq for planned in failed)
        return failed


# -- reading Kafka back ----------------------------------------------------------------


@dataclass(frozen=True)
class TopicMessage:
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = sorted(p["partition"] for p in described[0]["partitions"])
    assert found, f"topic {topic} has no partitions: {described}"
    return [TopicPartition(topic, p) for p in found]


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[TopicMessage]:
    """Every message of every partition, from the first to the end offset as of now."""
    async with asyncio.timeout(timeout_s):
        return await _read_topic(bootstrap, topic)


async def _read_topic(bootstrap: str, topic: str) -> list[TopicMessage]:
    tps = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        messages: list[TopicMessage] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                messages += [
                    TopicMessage(
                        tp.partition,
                        m.offset,
                        m.timestamp,
                        m.value or b"",
                        m.key,
                        tuple(m.headers),
                    )
                    for m in batch
                    if m.offset < ends[tp]
                ]
        return messages
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def committed_offsets(
    bootstrap: str, group: str
) -> AsyncIterator[Callable[[], Awaitable[dict[int, int]]]]:
    """A reader of the group's committed offsets (next offset to read, by partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()

    async def read() -> dict[int, int]:
        async with asyncio.timeout(10):
            offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}

    try:
        yield read
    finally:
        await admin.close()


async def wait_caught_up(
    kafka: KafkaServer, topic: str, group: str, timeout_s: float
) -> dict[int, int]:
    """Until the group's committed offset is the end offset of every partition."""
    deadline = time.monotonic() + timeout_s
    ends = {tp.partition: end for tp, end in (await _end_offsets(kafka.bootstrap, topic)).items()}
    async with committed_offsets(kafka.bootstrap, group) as read_committed:
        committed: dict[int, int] = {}
        while True:
            with contextlib.suppress(Exception):  # the coordinator may be moving
                committed = await read_committed()
            if all(committed.get(p) == end for p, end in ends.items()):
                return ends
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"group {group} not caught up after {timeout_s:g} s: committed "
                    f"{dict(sorted(committed.items()))}, end {dict(sorted(ends.items()))}"
                )
            await asyncio.sleep(0.5)


async def _end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    async with asyncio.timeout(30):
        tps = await _partitions(bootstrap, topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
            return ends
        finally:
            await consumer.stop()


async def stored_partials(
    hazelcast: HazelcastCluster, scope: str, source: str
) -> list[tuple[PartialKey, Partial]]:
    """The map ``partials.<scope>`` as the reducer's feed reads it."""
    client = await connect(
        hazelcast.members, hazelcast.cluster_name, client_name=f"{scope}-exactness"
    )
    feed = HazelcastFeed(client, map_name=f"partials.{scope}")
    try:
        entries = await feed.open()
    finally:
        await feed.close()
        await client.shutdown()
    return [(key, partial) for key, partial in entries if key.source == source]


# -- the brute-force answer -------------------------------------------------------------


def _partial_of(
    bucket: int, events: list[ExpectedEvent], drops: Counter[str], offset: int
) -> Partial:
    partial = brute_partial(bucket, events, len(DIMENSIONS))
    partial.dropped = dict(drops)
    partial.offset = offset
    return partial


@dataclass
class Truth:
    """The messages of the topic, each with the outcome it must have."""

    valid: list[tuple[TopicMessage, ExpectedEvent]] = field(default_factory=list)
    rejected: list[tuple[TopicMessage, str]] = field(default_factory=list)

    @classmethod
    def of(cls, messages: Iterable[TopicMessage], plan: dict[bytes, Planned]) -> Truth:
        truth = cls()
        for message in messages:
            planned = plan.get(message.value)
            assert planned is not None, f"a message nobody planned: {message}"
            assert (message.partition, message.timestamp_ms) == (
                planned.partition,
                planned.timestamp_ms,
            ), (message, planned)
            if planned.event is not None:
                truth.valid.append((message, planned.event))
            else:
                assert planned.reason is not None
                truth.rejected.append((message, planned.reason))
        return truth

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.rejected)

    def events(self) -> list[ExpectedEvent]:
        return [event for _, event in self.valid]

    def cells(self) -> dict[tuple[int, int], Partial]:
        """The partial each (partition, bucket) must hold: valid events by event
        time, rejected messages by record time; offset the highest folded."""
        events: dict[tuple[int, int], list[ExpectedEvent]] = defaultdict(list)
        drops: dict[tuple[int, int], Counter[str]] = defaultdict(Counter)
        offsets: dict[tuple[int, int], int] = defaultdict(lambda: -1)
        for message, event in self.valid:
            cell = (message.partition, event.bucket)
            events[cell].append(event)
            offsets[cell] = max(offsets[cell], message.offset)
        for message, reason in self.rejected:
            cell = (message.partition, message.timestamp_ms // 1000)
            drops[cell][reason] += 1
            offsets[cell] = max(offsets[cell], message.offset)
        return {
            cell: _partial_of(cell[1], events[cell], drops[cell], offsets[cell]) for cell in offsets
        }

    def buckets(self) -> dict[int, Partial]:
        """The merge of every partition's partial of each bucket (offset not compared)."""
        events: dict[int, list[ExpectedEvent]] = defaultdict(list)
        drops: dict[int, Counter[str]] = defaultdict(Counter)
        for _, event in self.valid:
            events[event.bucket].append(event)
        for message, reason in self.rejected:
            drops[message.timestamp_ms // 1000][reason] += 1
        return {
            bucket: _partial_of(bucket, events[bucket], drops[bucket], -1)
            for bucket in set(events) | set(drops)
        }


def _agg_problems(where: str, expected: Agg, actual: Agg) -> list[str]:
    problems = []
    for name in ("count", "vcount", "hist", "regs"):
        if getattr(expected, name) != getattr(actual, name):
            mine, theirs = getattr(expected, name), getattr(actual, name)
            if isinstance(mine, dict):
                mine = sum(mine.values()) if name == "hist" else len(mine)
                theirs = sum(theirs.values()) if name == "hist" else len(theirs)
                name += " (total)" if name == "hist" else " (registers)"
            problems.append(f"{where}: {name} {theirs}, expected {mine}")
    if expected.vcount and (expected.vmin, expected.vmax) != (actual.vmin, actual.vmax):
        problems.append(
            f"{where}: min/max {actual.vmin}/{actual.vmax}, expected {expected.vmin}/"
            f"{expected.vmax}"
        )
    if not math.isclose(expected.vsum, actual.vsum, rel_tol=1e-9, abs_tol=1e-6):
        problems.append(f"{where}: value sum {actual.vsum}, expected {expected.vsum}")
    return problems


def partial_problems(where: str, expected: Partial, actual: Partial, *, offset: bool) -> list[str]:
    """Every difference between two partials (values summed in another order may
    differ in the last bits of their float sum, nothing else may)."""
    problems = _agg_problems(f"{where} total", expected.total, actual.total)
    for dim, (mine, theirs) in enumerate(zip(expected.by, actual.by, strict=True)):
        name = DIMENSIONS[dim]
        if set(mine) != set(theirs):
            problems.append(f"{where} {name} keys {sorted(theirs)}, expected {sorted(mine)}")
        for key in sorted(set(mine) & set(theirs)):
            problems += _agg_problems(f"{where} {name}={key}", mine[key], theirs[key])
    if expected.dropped != actual.dropped:
        problems.append(f"{where}: rejected {actual.dropped}, expected {expected.dropped}")
    if offset and expected.offset != actual.offset:
        problems.append(f"{where}: offset {actual.offset}, expected {expected.offset}")
    return problems


def store_problems(truth: Truth, stored: Sequence[tuple[PartialKey, Partial]]) -> list[str]:
    """Each stored (partition, bucket) partial, and their merge per bucket through
    the core's ``merged``, against the brute-force answer."""
    problems = []
    actual = {(key.partition, key.bucket): partial for key, partial in stored}
    for key, partial in stored:
        if partial.bucket != key.bucket:
            problems.append(f"entry {key} holds bucket {partial.bucket}")
    expected = truth.cells()
    for cell in sorted(set(actual) - set(expected)):
        problems.append(f"partition {cell[0]} bucket {cell[1]}: stored, expected none")
    for cell in sorted(set(expected) - set(actual)):
        problems.append(f"partition {cell[0]} bucket {cell[1]}: missing from the store")
    for cell in sorted(set(expected) & set(actual)):
        where = f"partition {cell[0]} bucket {cell[1]}"
        problems += partial_problems(where, expected[cell], actual[cell], offset=True)
    by_bucket: dict[int, list[Partial]] = defaultdict(list)
    for partial in actual.values():
        by_bucket[partial.bucket].append(partial)
    for bucket, partial in sorted(truth.buckets().items()):
        combined = merged(by_bucket.get(bucket, []), bucket, len(DIMENSIONS))
        problems += partial_problems(f"bucket {bucket}", partial, combined, offset=False)
    return problems


# -- the dead-letter topic ----------------------------------------------------------------


def dead_letter_problems(
    truth: Truth, letters: Sequence[TopicMessage], source_topic: str
) -> tuple[list[str], list[tuple[int, int]]]:
    """Problems, and the (partition, offset) origins of letters that repeat one.

    Delivery is at-least-once: the map stage delivers dead letters before it stores
    the partials and commits, so a pod that dies (or is fenced) in between leaves
    letters whose source offsets the next owner folds, and sends, again.  Those
    repeats must be identical copies; every rejected message must be there, and
    nothing else."""
    originals = {(m.partition, m.offset): (m, reason) for m, reason in truth.rejected}
    problems = []
    seen: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        headers = letter.headers
        ours = dict(headers[-5:])
        if set(ours) != {
            "reason", "source-topic", "source-partition", "source-offset", "source-timestamp"
        }:  # fmt: skip
            problems.append(f"dead letter without its origin headers: {letter}")
            continue
        origin = (int(ours["source-partition"]), int(ours["source-offset"]))
        seen[origin] += 1
        found = originals.get(origin)
        if found is None:
            problems.append(f"dead letter for {origin}, which is no rejected message: {letter}")
            continue
        message, reason = found
        expected = (
            message.value,
            message.key,
            message.headers,
            reason,
            source_topic,
            message.timestamp_ms,
        )
        actual = (
            letter.value,
            letter.key,
            headers[:-5],
            ours["reason"].decode(),
            ours["source-topic"].decode(),
            int(ours["source-timestamp"]),
        )
        if actual != expected:
            problems.append(f"dead letter for {origin} is {actual}, expected {expected}")
    missing = sorted(set(originals) - set(seen))
    if missing:
        problems.append(f"{len(missing)} rejected messages have no dead letter: {missing[:10]}")
    return problems, sorted(origin for origin, copies in seen.items() if copies > 1)


# -- the snapshot -------------------------------------------------------------------------


def covers(snapshot: dict[str, Any], truth: Truth) -> bool:
    """The snapshot's window holds every event and every rejected message."""
    buckets = [e.bucket for e in truth.events()] + [
        m.timestamp_ms // 1000 for m, _ in truth.rejected
    ]
    window = snapshot["window"]
    return bool(buckets) and window["start"] <= min(buckets) and max(buckets) < window["end"]


def snapshot_problems(snapshot: dict[str, Any], truth: Truth) -> list[str]:
    """A snapshot whose window covers every message against the brute force: counts
    and series exact, distinct within 3 standard errors, quantiles within 1 %."""
    problems = []
    events = truth.events()
    total = snapshot["total"]
    if not covers(snapshot, truth):
        problems.append(f"window {snapshot['window']} does not cover every message")
    if total["count"] != len(events):
        problems.append(f"total count {total['count']}, expected {len(events)}")
    seconds = snapshot["window"]["seconds"]
    if not math.isclose(total["rate_per_s"], len(events) / seconds, rel_tol=1e-9):
        problems.append(f"rate {total['rate_per_s']}, expected {len(events) / seconds}")
    devices = {e.distinct for e in events if e.distinct is not None}
    if not distinct_ok(total["distinct"], len(devices)):
        problems.append(f"distinct {total['distinct']}, exact {len(devices)}")
    problems += _value_problems(total["value"], [e.value for e in events if e.value is not None])
    series = Counter(e.bucket for e in events)
    shown = {row["start"]: row["count"] for row in snapshot["series"]}
    for bucket in sorted(set(series) | {b for b, c in shown.items() if c}):
        if shown.get(bucket) != series.get(bucket, 0):
            problems.append(f"series {bucket}: {shown.get(bucket)}, expected {series[bucket]}")
    for dim, name in enumerate(DIMENSIONS):
        rows = {row["key"]: row for row in snapshot["by"][name]}
        keys = {e.keys[dim] for e in events}
        if set(rows) != keys:
            problems.append(f"by {name}: keys {sorted(rows)}, expected {sorted(keys)}")
        for key in sorted(set(rows) & keys):
            mine = [e for e in events if e.keys[dim] == key]
            row = rows[key]
            if row["count"] != len(mine):
                problems.append(f"by {name}={key}: count {row['count']}, expected {len(mine)}")
            exact = len({e.distinct for e in mine if e.distinct is not None})
            if not distinct_ok(row["distinct"], exact):
                problems.append(f"by {name}={key}: distinct {row['distinct']}, exact {exact}")
            values = [e.value for e in mine if e.value is not None]
            if values:
                p99 = nearest_rank_value(values, 0.99)
                if not quantile_ok(row["p99"], p99):
                    problems.append(f"by {name}={key}: p99 {row['p99']}, exact {p99}")
    reasons = truth.reasons()
    expected_rejected = {reason: reasons.get(reason, 0) for reason in REASONS}
    rejected = snapshot["rejected"]
    if rejected["by_reason"] != expected_rejected or rejected["count"] != len(truth.rejected):
        problems.append(f"rejected {rejected}, expected {expected_rejected}")
    if (snapshot.get("late"), snapshot.get("future")) != (0, 0):
        problems.append(f"late {snapshot.get('late')}, future {snapshot.get('future')}")
    return problems


def _value_problems(shown: dict[str, Any] | None, values: list[float]) -> list[str]:
    if not values:
        return [] if shown is None else [f"value statistics {shown} without any value"]
    if shown is None:
        return ["no value statistics"]
    problems = []
    exact = {"count": len(values), "min": min(values), "max": max(values)}
    if {name: shown[name] for name in exact} != exact:
        problems.append(f"value {shown}, expected {exact}")
    if not math.isclose(shown["mean"], sum(values) / len(values), rel_tol=1e-9):
        problems.append(f"value mean {shown['mean']}, expected {sum(values) / len(values)}")
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        if not quantile_ok(shown[name], nearest_rank_value(values, q)):
            problems.append(f"value {name} {shown[name]}, exact {nearest_rank_value(values, q)}")
    return problems


async def settled_snapshot(cluster: Cluster, truth: Truth, timeout_s: float) -> dict[str, Any]:
    """The latest snapshot of a live pod once it covers every message and agrees with
    the brute force, or the last one seen when ``timeout_s`` runs out (the caller
    then shows its differences)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        for pod in cluster.alive():
            with contextlib.suppress(Exception):
                snapshot: dict[str, Any] = await pod.get("/api/stats")
                if str(snapshot.get("leader", "")).startswith(cluster.config.prefix):
                    last = snapshot
                    if not snapshot_problems(snapshot, truth):
                        return snapshot
        if time.monotonic() > deadline:
            assert last is not None, "no live pod served a snapshot of this cluster"
            return last
        await asyncio.sleep(1.0)


def history_problems(recorder: SnapshotRecorder, prefix: str, truth: Truth) -> list[str]:
    """Over every snapshot recorded: one leader per epoch and leader changes raise
    it (``fencing_violations``), each pod pushed epochs that never went down, and no
    snapshot ever counted more than there was (no transient double count)."""
    mine = recorder.mine(prefix)
    if not mine:
        return ["no snapshot from this scenario's leaders"]
    problems = fencing_violations(mine)
    highest: dict[str, int] = {}
    for seen in mine:
        observer, epoch = seen.observer, seen.epoch
        if epoch < highest.get(observer, -1):
            problems.append(f"{observer} pushed epoch {epoch} after {highest[observer]}")
        highest[observer] = max(highest.get(observer, -1), epoch)
        if seen.count > len(truth.valid) or seen.rejected > len(truth.rejected):
            problems.append(
                f"snapshot of epoch {epoch} counted {seen.count} events / {seen.rejected} "
                f"rejected; there are only {len(truth.valid)} / {len(truth.rejected)}"
            )
    return problems


# -- after the stream ------------------------------------------------------------------


async def check_everything(
    cluster: Cluster,
    recorder: SnapshotRecorder,
    kafka: KafkaServer,
    hazelcast: HazelcastCluster,
    maker: StreamMaker,
    *,
    catch_up_s: float,
) -> tuple[Truth, list[tuple[int, int]]]:
    """After the stream stopped: wait until every offset is committed, then check the
    stored partials, the dead-letter topic, the final snapshot and every snapshot
    seen.  Returns the truth and the origins of repeated dead letters."""
    config = cluster.config
    began = time.monotonic()
    await wait_caught_up(kafka, config.topic, f"{config.prefix}-group", catch_up_s)
    print(f"every offset committed {time.monotonic() - began:.1f} s after the stream stopped")
    truth = Truth.of(await read_topic(kafka.bootstrap, config.topic), maker.plan)
    assert set(truth.reasons()) == set(REASONS), truth.reasons()
    print(f"{len(truth.valid)} valid events, rejected {dict(truth.reasons())}")

    stored = await stored_partials(hazelcast, config.prefix, config.topic)
    problems = store_problems(truth, stored)
    assert not problems, f"{len(problems)} differences in the store:\n" + "\n".join(problems[:40])

    letters = await read_topic(kafka.bootstrap, f"{config.prefix}-dlq")
    problems, repeats = dead_letter_problems(truth, letters, config.topic)
    assert not problems, "\n".join(problems[:40])
    print(f"dead letters repeated (partition, offset): {repeats}")

    snapshot = await settled_snapshot(cluster, truth, timeout_s=60)
    problems = snapshot_problems(snapshot, truth)
    assert not problems, "final snapshot:\n" + "\n".join(problems[:40])
    problems = history_problems(recorder, config.prefix, truth)
    assert not problems, "\n".join(problems[:40])
    return truth, repeats
