"""The EventSource port's contract: the same cases on the memory log
(``MemoryConsumer``) and on a real Kafka topic (``KafkaSource``).

``source_kind`` (indirect) gives a ``Harness``: a fresh 6-partition log,
``append`` to put records in given partitions, and ``consumer`` for another
member of a group.  Kafka members heartbeat fast so rebalances take ~1 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pytest
from aiokafka import AIOKafkaProducer

from aggregator.adapters.kafka.source import KafkaSource
from aggregator.adapters.memory.clock import SystemClock
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.ports.source import EventSource, SourceRecord
from tests.fixtures.kafka_hazelcast import KafkaServer, unique_name

PARTITIONS = 6
ALL = frozenset(range(PARTITIONS))
DEADLINE_S = 30.0
FETCH_TIMEOUT_S = 0.1

pytestmark = pytest.mark.parametrize(
    "source_kind", ["memory", pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
)


class Harness(Protocol):
    async def append(self, records: Sequence[tuple[int, bytes]]) -> None: ...

    def consumer(self, group: str, member: str) -> EventSource: ...


@dataclass
class MemoryHarness:
    log: MemoryLog = field(default_factory=lambda: MemoryLog(SystemClock(), "contract", PARTITIONS))

    async def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        for partition, value in records:
            self.log.append(partition, value)

    def consumer(self, group: str, member: str) -> EventSource:
        return MemoryConsumer(self.log, group, member)


@dataclass
class KafkaHarness:
    bootstrap: str
    topic: str
    producer: AIOKafkaProducer
    opened: list[KafkaSource] = field(default_factory=list)

    async def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        sent = [
            await self.producer.send(self.topic, value, partition=partition)
            for partition, value in records
        ]
        await asyncio.gather(*sent)

    def consumer(self, group: str, member: str) -> EventSource:
        source = KafkaSource(
            self.bootstrap,
            self.topic,
            group,
            member,
            session_timeout_s=6.0,
            heartbeat_interval_s=0.2,
            request_timeout_s=5.0,
        )
        self.opened.append(source)
        return source


@pytest.fixture
async def source_kind(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    kafka: KafkaServer = request.getfixturevalue("kafka")
    topic = await kafka.create_topic(unique_name(request.node.name), partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=2)
    await producer.start()
    harness = KafkaHarness(kafka.bootstrap, topic, producer)
    try:
        yield harness
    finally:
        for source in harness.opened:
            await source.stop()
        await producer.stop()


class Member:
    """One group member with a listener that records what it was told.

    ``owners`` is shared by the members of a test: a partition assigned while
    another member still holds it is a violation.  With ``commit_on_revoke`` the
    listener commits what it has read before giving partitions up (as the map
    stage does after its flush).
    """

    def __init__(
        self,
        source: EventSource,
        owners: dict[str, set[int]],
        name: str,
        *,
        commit_on_revoke: bool = False,
    ) -> None:
        self.source = source
        self.name = name
        self.owners = owners
        self.owned = owners.setdefault(name, set())
        self.commit_on_revoke = commit_on_revoke
        self.events: list[tuple[str, frozenset[int]]] = []
        self.violations: list[str] = []
        self.records: list[SourceRecord] = []
        self.next_offsets: dict[int, int] = {}
        self.work_s = 0.0
        """Time spent between fetches (a flush, say); the listener must not run then."""
        self.busy = False

    def _check_not_busy(self, what: str) -> None:
        if self.busy:
            self.violations.append(f"{self.name}: {what} ran while the member was not in fetch")

    async def on_revoked(self, partitions: frozenset[int]) -> None:
        self.events.append(("revoked", partitions))
        self._check_not_busy("on_revoked")
        if not partitions <= self.owned:
            self.violations.append(f"{self.name} revoked {set(partitions)} not held")
        if self.commit_on_revoke:
            done = {p: o for p, o in self.next_offsets.items() if p in partitions}
            await self.source.commit(done)
        for partition in partitions:
            self.next_offsets.pop(partition, None)
        self.owned -= partitions

    async def on_assigned(self, partitions: frozenset[int]) -> None:
        self.events.append(("assigned", partitions))
        self._check_not_busy("on_assigned")
        for other, held in self.owners.items():
            if other != self.name and held & partitions:
                self.violations.append(f"{self.name} got {set(held & partitions)} from {other}")
        self.owned |= partitions

    async def start(self) -> None:
        await self.source.start(self)

    async def fetch_once(self) -> list[SourceRecord]:
        records = await self.source.fetch(1000, FETCH_TIMEOUT_S)
        self.records.extend(records)
        for record in records:
            self.next_offsets[record.partition] = record.offset + 1
        return records

    def settled(self) -> bool:
        return self.source.assignment() == frozenset(self.owned)


async def pump_until(members: Sequence[Member], done: Callable[[], bool]) -> None:
    """Every member fetches in its own task (as pods do) until ``done()``."""
    stop = asyncio.Event()

    async def pump(member: Member) -> None:
        while not stop.is_set():
            await member.fetch_once()
            if member.work_s:
                member.busy = True
                await asyncio.sleep(member.work_s)
                member.busy = False

    tasks = [asyncio.create_task(pump(m)) for m in members]
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            for task in tasks:
                if task.done():
                    task.result()  # a fetch raised: show it
            assert time.monotonic() < deadline, "timed out; " + "; ".join(
                f"{m.name}: assignment {sorted(m.source.assignment())} events {m.events}"
                for m in members
            )
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def offsets(records: Sequence[SourceRecord], partition: int) -> list[int]:
    return [r.offset for r in records if r.partition == partition]


def values(records: Sequence[SourceRecord], partition: int) -> list[bytes]:
    return [r.value for r in records if r.partition == partition]


def value(partition: int, index: int) -> bytes:
    return f'{{"p":{partition},"i":{index}}}'.encode()


def batch(counts: Sequence[int], start: int = 0) -> list[tuple[int, bytes]]:
    return [(p, value(p, i)) for p, n in enumerate(counts) for i in range(start, start + n)]


async def test_records_come_back_in_offset_order_per_partition_with_values_intact(
    source_kind: Harness,
) -> None:
    await source_kind.append(batch([20] * PARTITIONS))
    member = Member(source_kind.consumer(unique_name("order"), "a"), {}, "a")
    await member.start()
    before = time.time()

    await pump_until([member], lambda: len(member.records) >= 20 * PARTITIONS)

    assert len(member.records) == 20 * PARTITIONS
    assert all(type(r).__module__.startswith("aggregator.") for r in member.records)
    for p in range(PARTITIONS):
        assert offsets(member.records, p) == list(range(20))
        assert values(member.records, p) == [value(p, i) for i in range(20)]
    assert all(abs(r.timestamp - before) < 120 for r in member.records)
    assert member.events == [("assigned", ALL)]
    assert member.source.assignment() == ALL
    assert member.violations == []


async def test_a_new_member_resumes_from_the_committed_offsets(source_kind: Harness) -> None:
    group = unique_name("resume")
    await source_kind.append(batch([10] * PARTITIONS))
    first = Member(source_kind.consumer(group, "a"), {}, "a")
    await first.start()
    await pump_until([first], lambda: len(first.records) >= 10 * PARTITIONS)

    await first.source.commit({p: 6 for p in range(PARTITIONS)})
    assert [await first.source.committed(p) for p in range(PARTITIONS)] == [6] * PARTITIONS
    await first.source.stop()
    assert first.events[-1] == ("revoked", ALL)
    assert first.source.assignment() == frozenset()

    second = Member(source_kind.consumer(group, "b"), {}, "b")
    await second.start()
    await pump_until([second], lambda: len(second.records) >= 4 * PARTITIONS)
    await second.fetch_once()

    for p in range(PARTITIONS):
        assert offsets(second.records, p) == [6, 7, 8, 9]
        assert values(second.records, p) == [value(p, i) for i in range(6, 10)]


async def test_committed_is_none_for_a_group_that_never_committed(source_kind: Harness) -> None:
    member = Member(source_kind.consumer(unique_name("fresh"), "a"), {}, "a")
    await member.start()
    assert await member.source.committed(0) is None


async def test_two_members_split_the_partitions_and_the_survivor_takes_them_all(
    source_kind: Harness,
) -> None:
    group = unique_name("split")
    owners: dict[str, set[int]] = {}
    a = Member(source_kind.consumer(group, "a"), owners, "a")
    b = Member(source_kind.consumer(group, "b"), owners, "b")
    await a.start()
    await pump_until([a], lambda: a.source.assignment() == ALL)

    await b.start()

    def split() -> bool:
        held_a, held_b = a.source.assignment(), b.source.assignment()
        return bool(held_a and held_b and held_a | held_b == ALL and a.settled() and b.settled())

    await pump_until([a, b], split)
    assert not a.source.assignment() & b.source.assignment()

    held_by_b = b.source.assignment()
    await b.source.stop()
    assert b.events[-1] == ("revoked", held_by_b)
    assert b.source.assignment() == frozenset()
    assert owners["b"] == set()

    await pump_until([a], lambda: a.source.assignment() == ALL and a.settled())
    assert owners["a"] == set(ALL)
    assert a.events[0] == ("assigned", ALL)
    assert a.violations == []
    assert b.violations == []


async def test_a_commit_in_on_revoked_hands_partitions_over_without_rereading(
    source_kind: Harness,
) -> None:
    group = unique_name("handover")
    owners: dict[str, set[int]] = {}
    a = Member(source_kind.consumer(group, "a"), owners, "a", commit_on_revoke=True)
    b = Member(source_kind.consumer(group, "b"), owners, "b", commit_on_revoke=True)
    await source_kind.append(batch([10] * PARTITIONS))
    await a.start()
    await pump_until([a], lambda: len(a.records) >= 10 * PARTITIONS)

    await b.start()
    await pump_until(
        [a, b],
        lambda: (
            bool(a.source.assignment() and b.source.assignment()) and a.settled() and b.settled()
        ),
    )
    await source_kind.append(batch([5] * PARTITIONS, start=10))
    await pump_until([a, b], lambda: len(a.records) + len(b.records) >= 15 * PARTITIONS)
    await asyncio.gather(a.fetch_once(), b.fetch_once())

    read = [(r.partition, r.offset) for r in a.records + b.records]
    assert sorted(read) == [(p, o) for p in range(PARTITIONS) for o in range(15)]
    assert all(r.offset >= 10 for r in b.records)
    assert a.violations == []
    assert b.violations == []


async def test_the_listener_runs_only_while_the_member_waits_in_fetch(
    source_kind: Harness,
) -> None:
    group = unique_name("inside")
    owners: dict[str, set[int]] = {}
    a = Member(source_kind.consumer(group, "a"), owners, "a")
    b = Member(source_kind.consumer(group, "b"), owners, "b")
    await a.start()
    await pump_until([a], lambda: a.source.assignment() == ALL)
    a.work_s = 0.4  # most of a's time is spent outside fetch

    await b.start()
    await pump_until([a, b], lambda: bool(b.source.assignment()) and a.settled() and b.settled())
    await b.source.stop()
    await pump_until([a], lambda: a.source.assignment() == ALL and a.settled())

    assert a.violations == []
    assert len(a.events) >= 3


async def test_seek_reads_a_partition_again(source_kind: Harness) -> None:
    await source_kind.append([(0, value(0, i)) for i in range(5)])
    member = Member(source_kind.consumer(unique_name("seek"), "a"), {}, "a")
    await member.start()
    await pump_until([member], lambda: len(member.records) >= 5)

    await member.source.seek(0, 2)
    await pump_until([member], lambda: len(member.records) >= 8)
    await member.fetch_once()

    assert offsets(member.records, 0) == [0, 1, 2, 3, 4, 2, 3, 4]
    assert values(member.records, 0)[5:] == [value(0, i) for i in (2, 3, 4)]


async def test_end_offsets_cover_the_assigned_partitions(source_kind: Harness) -> None:
    counts = [3, 0, 1, 4, 2, 5]
    await source_kind.append(batch(counts))
    member = Member(source_kind.consumer(unique_name("ends"), "a"), {}, "a")
    await member.start()
    assert await member.source.end_offsets() == {}

    await pump_until([member], lambda: member.source.assignment() == ALL)

    assert await member.source.end_offsets() == dict(enumerate(counts))
    await source_kind.append([(1, value(1, 0))])
    assert (await member.source.end_offsets())[1] == 1
