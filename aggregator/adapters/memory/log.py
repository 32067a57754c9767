"""A partitioned in-memory log with Kafka-like consumer groups.

Records get consecutive offsets per partition and the append time as timestamp.
A group spreads partitions over its members (sorted member ids, round-robin);
when members join, leave or stop heart-beating for ``session_timeout_s``, the
assignment changes.  A partition moves to its new owner only after its old owner
gave it up (revoke ran) or expired, as with Kafka's rebalance barrier; committed
offsets are kept per group.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from aggregator.ports.clock import Clock
from aggregator.ports.source import RebalanceListener, SourceRecord, SourceUnavailable

TRIM_EVERY = 1024
"""Appends to a partition between two looks at its oldest records."""


class MemoryLog:
    """``retention_s`` (None: keep everything) deletes records older than that, as
    Kafka's retention.ms does: offsets stay as they were, and a consumer behind
    the oldest record left reads on from it (auto.offset.reset=earliest)."""

    def __init__(
        self,
        clock: Clock,
        topic: str = "crash-events",
        partitions: int = 6,
        *,
        retention_s: float | None = None,
    ) -> None:
        if partitions <= 0:
            raise ValueError("a log needs at least one partition")
        if retention_s is not None and not retention_s > 0:
            raise ValueError("a retention must be positive")
        self.clock = clock
        self.topic = topic
        self.retention_s = retention_s
        self._records: list[list[SourceRecord]] = [[] for _ in range(partitions)]
        self._base = [0] * partitions
        """Per partition: the offset of the oldest record kept."""
        self._groups: dict[str, _Group] = {}
        self._appended = asyncio.Event()
        self.available = True

    @property
    def partitions(self) -> int:
        return len(self._records)

    def append(self, partition: int, value: bytes, timestamp: float | None = None) -> int:
        log = self._records[partition]
        offset = self._base[partition] + len(log)
        at = self.clock.time() if timestamp is None else timestamp
        # A copy of exactly the value's size, as a broker writes it to its segment:
        # orjson.dumps hands out 4 KiB blocks for 125-byte events (3.13, measured),
        # which a log that keeps them would hold 30 times over.
        log.append(SourceRecord(partition, offset, at, memoryview(value).tobytes()))
        self._appended.set()
        if self.retention_s is not None and offset % TRIM_EVERY == 0:
            self._trim(partition, self.clock.time() - self.retention_s)
        return offset

    def start_offset(self, partition: int) -> int:
        return self._base[partition]

    def end_offset(self, partition: int) -> int:
        return self._base[partition] + len(self._records[partition])

    def read(self, partition: int, offset: int, limit: int) -> list[SourceRecord]:
        start = max(offset, self._base[partition]) - self._base[partition]
        return self._records[partition][start : start + limit]

    def _trim(self, partition: int, horizon: float) -> None:
        log = self._records[partition]
        cut = 0
        while cut < len(log) and log[cut].timestamp < horizon:
            cut += 1
        if cut:
            del log[:cut]
            self._base[partition] += cut

    def group(self, name: str, session_timeout_s: float) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group(self, session_timeout_s)
        return group

    async def wait_for_records(self, timeout_s: float) -> None:
        self._appended.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that arrives as the wait completes, and a killed demo
        # pod would then keep polling.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._appended.wait()


@dataclass
class _Group:
    log: MemoryLog
    session_timeout_s: float
    members: dict[str, float] = field(default_factory=dict)
    """member id -> monotonic time of its last heartbeat."""
    owners: dict[int, str] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    generation: int = 0

    def heartbeat(self, member: str) -> None:
        now = self.log.clock.monotonic()
        if member not in self.members:
            self.generation += 1
        self.members[member] = now
        expired = [m for m, seen in self.members.items() if now - seen > self.session_timeout_s]
        for gone in expired:
            self.leave(gone)

    def leave(self, member: str) -> None:
        if self.members.pop(member, None) is not None:
            self.generation += 1
        for partition, owner in list(self.owners.items()):
            if owner == member:
                del self.owners[partition]

    def target(self) -> dict[int, str]:
        ordered = sorted(self.members)
        if not ordered:
            return {}
        return {p: ordered[p % len(ordered)] for p in range(self.log.partitions)}

    def release(self, member: str, partitions: frozenset[int]) -> None:
        for partition in partitions:
            if self.owners.get(partition) == member:
                del self.owners[partition]

    def claim(self, member: str) -> frozenset[int]:
        """Partitions the target gives ``member`` that nobody else still holds."""
        got = set()
        for partition, wanted in self.target().items():
            if wanted != member:
                continue
            holder = self.owners.get(partition)
            if holder is None or holder == member:
                self.owners[partition] = member
                got.add(partition)
        return frozenset(got)


class MemoryConsumer:
    """One group member; implements the ``EventSource`` port."""

    def __init__(
        self, log: MemoryLog, group: str, member_id: str, *, session_timeout_s: float = 10.0
    ) -> None:
        self._log = log
        self._group = log.group(group, session_timeout_s)
        self._member = member_id
        self._listener: RebalanceListener | None = None
        self._assigned: frozenset[int] = frozenset()
        self._positions: dict[int, int] = {}
        self._generation = -1
        self.available = True
        self.fail_commits = False
        """Refuse commits (as a broker might) while fetching still works."""

    @property
    def name(self) -> str:
        return self._log.topic

    async def start(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self._check()
        self._group.heartbeat(self._member)

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        self._check()
        self._group.heartbeat(self._member)
        await self._rebalance()
        records = self._poll(max_records)
        if not records:
            await self._log.wait_for_records(timeout_s)
            self._check()
            records = self._poll(max_records)
        return records

    async def commit(self, offsets: Mapping[int, int]) -> None:
        self._check()
        if self.fail_commits:
            raise SourceUnavailable("commit refused (simulated coordinator failure)")
        for partition, offset in offsets.items():
            if partition in self._assigned:
                self._group.committed[partition] = offset

    async def seek(self, partition: int, offset: int) -> None:
        self._positions[partition] = offset

    async def committed(self, partition: int) -> int | None:
        return self._group.committed.get(partition)

    async def end_offsets(self) -> dict[int, int]:
        self._check()
        return {p: self._log.end_offset(p) for p in self._assigned}

    def assignment(self) -> frozenset[int]:
        return self._assigned

    async def stop(self) -> None:
        if self._listener is not None and self._assigned:
            await self._listener.on_revoked(self._assigned)
        self._group.release(self._member, self._assigned)
        self._group.leave(self._member)
        self._assigned = frozenset()

    def crash(self) -> None:
        """Vanish without revoking (SIGKILL): the group notices after the session timeout."""
        self._assigned = frozenset()
        self.available = False

    def _check(self) -> None:
        if not (self.available and self._log.available):
            raise SourceUnavailable(f"memory log {self._log.topic} is unavailable")

    async def _rebalance(self) -> None:
        if self._listener is None:
            raise RuntimeError("start() the consumer before fetching")
        target = frozenset(p for p, m in self._group.target().items() if m == self._member)
        losing = self._assigned - target
        if losing:
            await self._listener.on_revoked(losing)
            self._group.release(self._member, losing)
            self._assigned -= losing
            for partition in losing:
                self._positions.pop(partition, None)
        gained = self._group.claim(self._member) - self._assigned
        if gained:
            for partition in gained:
                committed = self._group.committed.get(partition)
                self._positions[partition] = committed if committed is not None else 0
            self._assigned |= gained
            await self._listener.on_assigned(gained)
        self._generation = self._group.generation

    def _poll(self, max_records: int) -> list[SourceRecord]:
        records: list[SourceRecord] = []
        partitions = sorted(self._assigned)
        if not partitions:
            return records
        share = max(1, max_records // len(partitions))
        for partition in partitions:
            position = self._positions.get(partition, 0)
            chunk = self._log.read(partition, position, share)
            if chunk:
                self._positions[partition] = chunk[-1].offset + 1
                records.extend(chunk)
        return records
