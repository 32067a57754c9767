"""The map stage (every pod): fold the source's records into partials, store them,
then commit the source offsets.

Flushes fall on whole multiples of the flush interval on the wall clock, and a
fetch never waits past the next one: the flush that closes a second then starts
as the second ends, ahead of the leader's tick (docs/architecture.md,
"Latency").  ``align_flushes=False`` flushes every interval from the stage's
start instead, as before.

Offsets are committed only after the partials that cover them are stored, so a
crash replays from the last commit and the per-partial offsets skip what was
already counted.  When the store is unreachable the stage stops fetching and
committing, reports not ready, and retries by itself.  When a write is fenced
(another pod owns the partition now), the partition's state is reloaded from the
store and read again from the committed offset.

The store adds what each write carries (the buckets' deltas since the previous
write), so a write that raised may have added some of it: the partition's
stored state is unknown, and it is resynced the same way (reloaded, read again
from the committed offset) before anything of it is written again.  Writing the
same deltas again would count them twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aggregator.core.accumulate import FoldSettings, MapFolder
from aggregator.core.cadence import next_beat
from aggregator.ports.clock import Clock
from aggregator.ports.source import (
    DeadLetters,
    EventSource,
    SourceRecord,
    SourceRefused,
    SourceUnavailable,
)
from aggregator.ports.store import PartialStore, StoreUnavailable
from aggregator.services.durations import FLUSH_BOUNDS, Durations
from aggregator.services.retry import Backoff, RetryStopped, retry

FETCH_MAX_RECORDS = 5000
FETCH_WAIT_S = 0.2
"""The longest a fetch waits for records (shorter when a flush is due sooner)."""
SOURCE_CHECK_S = 5.0
"""How long the stage may fetch nothing before it asks the source whether it can
still be reached: a Kafka consumer's fetch returns nothing, not an error, while
the brokers are down, so silence alone cannot tell an idle topic from an outage."""
SOURCE_START_BACKOFF = Backoff(first_s=0.5, max_s=10.0)
STORE_LOAD_BACKOFF = Backoff(first_s=0.5, max_s=5.0)


@dataclass
class MapStats:
    records: int = 0
    counted: int = 0
    skipped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    flush_seconds: Durations = field(default_factory=lambda: Durations(FLUSH_BOUNDS))
    store_calls: int = 0
    fenced: int = 0
    resyncs: int = 0

    @property
    def flushes(self) -> int:
        return self.flush_seconds.count


class MapStage:
    def __init__(
        self,
        source: EventSource,
        store: PartialStore,
        clock: Clock,
        settings: FoldSettings,
        *,
        flush_interval_s: float,
        align_flushes: bool = True,
        dead_letters: DeadLetters | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._source = source
        self._store = store
        self._clock = clock
        self._settings = settings
        self._flush_interval = flush_interval_s
        self._align_flushes = align_flushes
        self._dead_letters = dead_letters
        self._log = logger or logging.getLogger("aggregator.map")
        self.folder = MapFolder(settings)
        self.stats = MapStats()
        self._next_offsets: dict[int, int] = {}
        self._uncommitted: set[int] = set()
        self._unknown: set[int] = set()
        """Partitions whose last write raised: resynced before the next one."""
        self._dlq: list[tuple[SourceRecord, str]] = []
        self._stopping = asyncio.Event()
        self._store_ok = True
        self._source_ok = False
        self._heard_at = 0.0
        """When the source last answered: records fetched, or a check passed."""
        self._retention = int(settings.retention_seconds)

    # -- health --------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._store_ok and self._source_ok

    @property
    def store_reachable(self) -> bool:
        """The store answered the last call (a pod that cannot reach it must not lead)."""
        return self._store_ok

    def assignment(self) -> frozenset[int]:
        return self._source.assignment()

    def positions(self) -> dict[int, int]:
        """Next offset to fold, per partition that has been read from."""
        return dict(self._next_offsets)

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        await self._start_source()
        flush_at = self._next_flush_at()
        while not self._stopping.is_set():
            if not self._store_ok:
                await self._retry_store()
                flush_at = self._next_flush_at()
                continue
            wait = min(FETCH_WAIT_S, self._flush_interval)
            if self._align_flushes:
                wait = max(0.0, min(wait, flush_at - self._clock.monotonic()))
            try:
                records = await self._source.fetch(FETCH_MAX_RECORDS, wait)
            except SourceUnavailable as error:
                self._source_down(error)
                await self._clock.sleep(1.0)
                continue
            if records:
                self._source_up()
            self._fold(records)
            if self._clock.monotonic() >= flush_at:
                await self.flush()
                flush_at = self._next_flush_at()
            if not records and self._clock.monotonic() - self._heard_at >= SOURCE_CHECK_S:
                await self._check_source()

    def _next_flush_at(self) -> float:
        """When the next flush is due, on the monotonic clock."""
        now = self._clock.monotonic()
        if not self._align_flushes:
            return now + self._flush_interval
        wall = self._clock.time()
        return now + next_beat(wall, self._flush_interval) - wall

    async def _check_source(self) -> None:
        """Ask the source for its end offsets: whether it can be reached (the stage
        is not ready while it cannot)."""
        try:
            await self._source.end_offsets()
        except SourceUnavailable as error:
            self._source_down(error)
            self._heard_at = self._clock.monotonic()  # the next check in SOURCE_CHECK_S
            return
        self._source_up()

    def _source_up(self) -> None:
        if not self._source_ok:
            self._log.info("source reachable again")
        self._source_ok = True
        self._heard_at = self._clock.monotonic()

    def _source_down(self, error: SourceUnavailable) -> None:
        if self._source_ok:
            self._log.warning("source unavailable; not ready until it answers: %s", error)
        self._source_ok = False

    async def stop(self) -> None:
        """Graceful: stop fetching, flush and commit, leave the group."""
        await self.drain()
        await self.leave()

    def stopping(self) -> None:
        """Stop fetching, and give up a retry under way: call before cancelling
        ``run``.  (Loading an assigned partition from an unreachable store is
        retried inside the source's rebalance callback, which a cancelled fetch
        waits for.)"""
        self._stopping.set()

    async def drain(self) -> None:
        """Stop fetching, then flush and commit what was folded."""
        self._stopping.set()
        await self.flush()

    async def leave(self) -> None:
        """Leave the consumer group (may wait for the group to rebalance)."""
        self._stopping.set()
        try:
            await self._source.stop()
        except SourceUnavailable as error:
            self._log.warning("could not leave the consumer group cleanly: %s", error)

    async def _start_source(self) -> None:
        """Start the dead-letter producer, then join the source, until both work
        (not ready meanwhile).  A refusal (credentials) is logged once, at error
        level, and again only when its message changes: the retries go on quietly
        so that fixed credentials are picked up without a restart."""
        refused: list[str] = []

        def failed(error: Exception, delay: float) -> None:
            if not isinstance(error, SourceRefused):
                self._log.warning(
                    "source not reachable at start, retrying in %.1fs: %s", delay, error
                )
            elif refused[-1:] != [str(error)]:
                refused.append(str(error))
                self._log.error("not ready: %s; retrying quietly", error)

        async def start() -> None:
            if self._dead_letters is not None:
                await self._dead_letters.start()
            await self._source.start(self)

        try:
            await retry(
                start,
                errors=SourceUnavailable,
                backoff=SOURCE_START_BACKOFF,
                clock=self._clock,
                on_error=failed,
                stopping=self._stopping,
            )
        except RetryStopped:
            return
        self._source_ok = True
        self._heard_at = self._clock.monotonic()

    def _fold(self, records: list[SourceRecord]) -> None:
        if not records:
            return
        stats = self.stats
        read_to: dict[int, int] = {}
        counted, skipped, rejected = self.folder.fold_many(records, read_to)
        stats.counted += counted
        stats.skipped += skipped
        if rejected:
            dropped = stats.dropped
            for _, reason in rejected:
                dropped[reason] = dropped.get(reason, 0) + 1
            if self._dead_letters is not None:
                self._dlq.extend(rejected)
        stats.records += len(records)
        self._next_offsets.update(read_to)
        self._uncommitted.update(read_to)

    # -- flushing ------------------------------------------------------------

    async def flush(self) -> bool:
        """Store every pending partial, then commit; False if the store failed."""
        started = self._clock.monotonic()
        try:
            assigned = self._source.assignment
            await self._store_and_commit(
                p for p in sorted(self.folder.partitions) if p in assigned()
            )
        except StoreUnavailable as error:
            if self._store_ok:
                self._log.warning("store unavailable; pausing fetch and commits: %s", error)
            self._store_ok = False
            return False
        except SourceUnavailable as error:
            self._log.warning("commit failed, will retry at the next flush: %s", error)
        self.stats.flush_seconds.observe(self._clock.monotonic() - started)
        return True

    async def _store_and_commit(self, partitions: Iterable[int]) -> None:
        """The one flush: deliver the dead letters, store each partition's pending
        partials, then commit the offsets of the partitions stored (a fenced one
        resyncs instead).  Raises ``StoreUnavailable`` or ``SourceUnavailable``
        for the caller to judge; nothing is committed past what was stored."""
        await self._send_dead_letters()
        commits: dict[int, int] = {}
        for partition in partitions:
            if await self._flush_partition(partition) and partition in self._uncommitted:
                commits[partition] = self._next_offsets[partition]
        if commits:
            await self._source.commit(commits)
            self._uncommitted.difference_update(commits)

    async def _flush_partition(self, partition: int) -> bool:
        if partition in self._unknown:
            await self._resync(partition, "had a write whose outcome is unknown")
            return False
        state = self.folder.partition(partition)
        partials = state.roll_up()
        if partials:
            self.stats.store_calls += 1
            try:
                fenced = await self._store.write(self._source.name, partition, partials)
            except BaseException:  # StoreUnavailable, or cancelled while in flight
                self._unknown.add(partition)
                raise
            if fenced:
                self.stats.fenced += len(fenced)
                await self._resync(partition, "was written by another pod")
                return False
            state.stored(p.bucket for p in partials)
        newest = max(state.partials, default=None)
        if newest is not None:
            state.expire(newest - self._retention)
        return True

    async def _send_dead_letters(self) -> None:
        """Deliver dead letters before the offsets that produced them are committed;
        on failure they stay queued and nothing is committed (at-least-once)."""
        if self._dead_letters is None or not self._dlq:
            return
        await self._dead_letters.send_many(self._dlq)
        self._dlq = []

    async def _retry_store(self) -> None:
        await self._clock.sleep(1.0)
        if await self.flush():
            self._store_ok = True
            self._log.info("store reachable again; resuming")

    async def _resync(self, partition: int, reason: str) -> None:
        """Our write was fenced, or its outcome is unknown: reload what the store
        has and read again from the committed offset."""
        self.stats.resyncs += 1
        self._log.warning("partition %d %s; reloading it", partition, reason)
        self._drop(partition)
        try:
            await self._load(partition)
        except RetryStopped:
            return  # stopping: it stays dropped, so nothing of it is committed
        committed = await self._source.committed(partition)
        await self._source.seek(partition, committed or 0)

    # -- rebalance listener ----------------------------------------------------

    async def on_revoked(self, partitions: frozenset[int]) -> None:
        try:
            known = self.folder.partitions.keys() - self._unknown  # the unknown: the next owner's
            await self._store_and_commit(p for p in sorted(partitions) if p in known)
        except (StoreUnavailable, SourceUnavailable) as error:
            self._log.warning(
                "could not hand over partitions %s cleanly: %s", sorted(partitions), error
            )
        for partition in partitions:
            self._drop(partition)

    async def on_assigned(self, partitions: frozenset[int]) -> None:
        for partition in sorted(partitions):
            try:
                await self._load(partition)
            except RetryStopped:
                self._log.info(
                    "stopping: assigned partitions %s not loaded, nothing of them is folded",
                    sorted(partitions),
                )
                return
        self._log.info("assigned partitions %s", sorted(partitions))

    def _drop(self, partition: int) -> None:
        self.folder.partitions.pop(partition, None)
        self._next_offsets.pop(partition, None)
        self._uncommitted.discard(partition)
        self._unknown.discard(partition)
        self._store.forget(self._source.name, partition)

    async def _load(self, partition: int) -> None:
        """Load the partition's stored partials; without them the offset dedup cannot
        work, so keep trying (not ready meanwhile) rather than fold blind, until
        the stage is stopping (``RetryStopped``: the partition has no state then,
        so nothing of it is folded or committed)."""

        def failed(error: Exception, delay: float) -> None:
            self._store_ok = False
            self._log.warning("cannot load partition %d yet (%s); retrying", partition, error)

        partials = await retry(
            lambda: self._store.load(self._source.name, partition),
            errors=StoreUnavailable,
            backoff=STORE_LOAD_BACKOFF,
            clock=self._clock,
            on_error=failed,
            stopping=self._stopping,
        )
        self.folder.partition(partition).load(partials)
