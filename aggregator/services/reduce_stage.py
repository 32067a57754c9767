"""The reduce stage (leader only): merge the window's partials every tick and
publish the snapshot, stamped with the leader's fencing epoch.

It first reads every stored partial, then only the ones that changed, so a tick
costs what changed.  Before each publish it asks the elector whether it still
leads with this epoch (and renewed recently enough); if not, it stays silent.

Each tick runs a little after its second ends: for a while after the second
the stage takes the changes as they come (every ``POLL_S``) and notes when the
last write of a bucket that has ended arrived, which is when the pods' flushes
that close the second landed; ``TickDelay`` (core/cadence.py) turns those
landings into how long the next ticks wait, at most ``tick_delay_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator.core.cadence import TickDelay, next_beat
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import RollingWindow
from aggregator.ports.bus import Published, SnapshotBus
from aggregator.ports.clock import Clock
from aggregator.ports.store import PartialFeed, StoreUnavailable
from aggregator.services.durations import TICK_BOUNDS, Durations
from aggregator.services.retry import Backoff, retry

FEED_OPEN_BACKOFF = Backoff(first_s=0.5, max_s=5.0)
POLL_S = 0.005
"""How often the stage takes the feed's changes while the flushes that close a
second land (reading the feed's buffer: no call to the store)."""


@dataclass(frozen=True, slots=True)
class ReduceSettings:
    dimension_names: tuple[str, ...]
    window_seconds: int
    bucket_seconds: int
    tick_s: float
    top_n: int
    tick_delay_s: float = 0.01
    """The longest the tick waits after each multiple of ``tick_s`` for the
    flushes that close the previous second (it learns how long they take)."""


@dataclass
class ReduceStats:
    published: int = 0
    publish_failures: int = 0
    withheld: int = 0
    tick_seconds: Durations = field(default_factory=lambda: Durations(TICK_BOUNDS))

    @property
    def ticks(self) -> int:
        return self.tick_seconds.count

    def record(self, seconds: float) -> None:
        self.tick_seconds.observe(seconds)


class ReduceStage:
    def __init__(
        self,
        feed: PartialFeed,
        bus: SnapshotBus,
        clock: Clock,
        settings: ReduceSettings,
        *,
        identity: str,
        leading_epoch: Callable[[], int | None],
        live_fields: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._feed = feed
        self._bus = bus
        self._clock = clock
        self._settings = settings
        self._identity = identity
        self._leading_epoch = leading_epoch
        self._live_fields = live_fields
        self._log = logger or logging.getLogger("aggregator.reduce")
        self.stats = ReduceStats()
        self._leading_since = 0.0

    async def run(self, epoch: int) -> None:
        """Reduce and publish until cancelled (the elector cancels it on demotion)."""
        settings = self._settings
        window = RollingWindow(
            len(settings.dimension_names), settings.window_seconds, settings.bucket_seconds
        )
        self._log.info("reducing as %s with epoch %d", self._identity, epoch)
        self._leading_since = self._clock.time()
        try:
            loaded = await retry(
                self._feed.open,
                errors=StoreUnavailable,
                backoff=FEED_OPEN_BACKOFF,
                clock=self._clock,
                on_error=self._store_failed,
            )
            for key, partial in loaded:
                window.apply(key, partial)
            delay = TickDelay(settings.tick_delay_s)
            await self.tick(window, epoch)
            while True:
                beat = next_beat(self._clock.time(), settings.tick_s)
                await self._clock.sleep(beat - self._clock.time())
                before = await self._follow(window, beat, beat + delay.current())
                await self.tick(window, epoch)
                after = await self._follow(window, beat, beat + delay.ceiling_s)
                delay.observe(after if after is not None else before)
        finally:
            await self._feed.close()

    async def tick(self, window: RollingWindow, epoch: int) -> None:
        started = self._clock.monotonic()
        try:
            changes = await self._feed.changes()
        except StoreUnavailable as error:
            self._log.warning("store unavailable; snapshot not refreshed: %s", error)
            return
        for key, partial in changes:
            window.apply(key, partial)
        now = self._clock.time()
        window.advance(now)
        extra: dict[str, Any] = {
            "leader": self._identity,
            "epoch": epoch,
            "leader_since": self._leading_since,
            "generated_at": now,
        }
        if self._live_fields is not None:
            extra.update(await self._live_fields())
        snapshot = build_snapshot(
            window, self._settings.dimension_names, self._settings.top_n, extra=extra
        )
        self.stats.record(self._clock.monotonic() - started)
        if self._leading_epoch() != epoch:
            self.stats.withheld += 1
            return
        try:
            await self._bus.publish(Published(epoch, self._identity, now, orjson.dumps(snapshot)))
        except StoreUnavailable as error:
            self.stats.publish_failures += 1
            self._log.warning("snapshot not published, the bus is unavailable: %s", error)
            return
        self.stats.published += 1

    async def _follow(self, window: RollingWindow, beat: float, until: float) -> float | None:
        """Apply the feed's changes as they come until ``until``; return how long
        after ``beat`` the last one of a bucket ended by then arrived (None: none)."""
        bucket_s = self._settings.bucket_seconds
        latest = None
        while (left := until - self._clock.time()) > 0:
            await self._clock.sleep(min(POLL_S, left))
            try:
                changes = await self._feed.changes()
            except StoreUnavailable:
                return latest  # the tick says so
            arrived = self._clock.time() - beat
            for key, partial in changes:
                window.apply(key, partial)
                if key.bucket + bucket_s <= beat:
                    latest = arrived
        return latest

    def _store_failed(self, error: Exception, delay: float) -> None:
        self._log.warning("store unavailable for the reducer, retrying: %s", error)
