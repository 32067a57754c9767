"""The reduce stage (leader only): merge the window's partials every tick and
publish the snapshot, stamped with the leader's fencing epoch.

It first reads every stored partial, then only the ones that changed, so a tick
costs what changed.  Before each publish it asks the elector whether it still
leads with this epoch (and renewed recently enough); if not, it stays silent.

A leader that has published nothing for ``stall_s`` because the store or the
bus does not answer (say Hazelcast is cut off from this pod alone) raises
``StepDown``: renewing a lease it cannot use would starve every dashboard for
as long as the cut lasts, while a pod that can reach the store is waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from aggregator.core.cadence import next_beat
from aggregator.core.partial import Partial
from aggregator.core.snapshot import build_snapshot
from aggregator.core.window import RollingWindow
from aggregator.ports.bus import Published, SnapshotBus
from aggregator.ports.clock import Clock, wait_first
from aggregator.ports.store import PartialFeed, PartialKey, StoreUnavailable
from aggregator.services.durations import TICK_BOUNDS, Durations
from aggregator.services.leading import StepDown
from aggregator.services.retry import Backoff, retry

FEED_OPEN_BACKOFF = Backoff(first_s=0.5, max_s=5.0)
PUBLISH_AT_LEAST_S = 1.0
FEED_CLOSE_WAIT_S = 0.5
APPLY_SLICE_S = 0.02


@dataclass(frozen=True, slots=True)
class ReduceSettings:
    dimension_names: tuple[str, ...]
    window_seconds: int
    bucket_seconds: int
    tick_s: float
    top_n: int
    tick_delay_s: float = 0.1
    """How long after each multiple of ``tick_s`` the tick runs: time for the pods'
    flushes that close the second (aligned on the same beats) to land."""
    stall_s: float = 5.0
    """Give the lease up after this long without a published snapshot."""


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
        self._published_at = 0.0
        """Monotonic: the last publish, or the start of the term."""
        self._closing: set[asyncio.Future[None]] = set()
        """Feed closes still under way (kept referenced until they finish)."""

    async def run(self, epoch: int) -> None:
        """Reduce and publish until cancelled (the elector cancels it on demotion)."""
        settings = self._settings
        window = RollingWindow(
            len(settings.dimension_names), settings.window_seconds, settings.bucket_seconds
        )
        self._log.info("reducing as %s with epoch %d", self._identity, epoch)
        self._leading_since = self._clock.time()
        self._published_at = self._clock.monotonic()
        try:
            loaded = await self._open_feed()
            await self._apply(window, loaded)
            self._published_at = self._clock.monotonic()  # a long first read is no stall
            while True:
                await self.tick(window, epoch)
                await self._sleep_to_next_tick()
        finally:
            await self._close_feed()

    async def _close_feed(self) -> None:
        """Close the feed, waiting at most ``FEED_CLOSE_WAIT_S``: closing removes a
        listener on the cluster, which a leader cut off from it would wait for up to
        a whole call timeout before the lease could go to a pod that can publish.
        A close that takes longer goes on in the background."""
        closing = asyncio.ensure_future(self._feed.close())
        if not await wait_first(self._clock, FEED_CLOSE_WAIT_S, closing):
            self._log.warning(
                "the feed did not close within %g s; leaving it to close by itself",
                FEED_CLOSE_WAIT_S,
            )
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            return
        closing.result()

    async def tick(self, window: RollingWindow, epoch: int) -> None:
        started = self._clock.monotonic()
        try:
            changes = await self._feed.changes()
        except StoreUnavailable as error:
            self._log.warning("store unavailable; snapshot not refreshed: %s", error)
            self._give_up_if_stalled(error)
            return
        await self._apply(window, changes)
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
        message = Published(epoch, self._identity, now, orjson.dumps(snapshot))
        try:
            await self._publish_by_the_stall_limit(message)
        except StoreUnavailable as error:
            self.stats.publish_failures += 1
            self._log.warning("snapshot not published, the bus is unavailable: %s", error)
            self._give_up_if_stalled(error)
            return
        self.stats.published += 1
        self._published_at = self._clock.monotonic()

    async def _apply(
        self, window: RollingWindow, partials: Iterable[tuple[PartialKey, Partial]]
    ) -> None:
        """Apply partials (decoded as they are taken), letting the event loop run
        every ``APPLY_SLICE_S``: a full read of the map after a Hazelcast member
        left took 30 s of CPU at 3,000 events/s, and a loop held that long misses
        the lease's renewals, the consumer's heartbeats and the liveness probe."""
        slice_ends = self._clock.monotonic() + APPLY_SLICE_S
        for key, partial in partials:
            window.apply(key, partial)
            if self._clock.monotonic() >= slice_ends:
                await asyncio.sleep(0)
                slice_ends = self._clock.monotonic() + APPLY_SLICE_S

    async def _publish_by_the_stall_limit(self, message: Published) -> None:
        """Publish; a call that hangs (packets dropped, not refused) is abandoned
        when the stall limit is reached, so a cut-off leader steps down on time."""
        left = self._published_at + self._settings.stall_s - self._clock.monotonic()
        allowed = max(left, PUBLISH_AT_LEAST_S)  # after a slow tick, a publish still gets a go
        publish = asyncio.ensure_future(self._bus.publish(message))
        if not await wait_first(self._clock, allowed, publish):
            publish.cancel()
            raise StoreUnavailable(f"the publish got no answer within {allowed:.1f} s")
        publish.result()

    async def _open_feed(self) -> Iterable[tuple[PartialKey, Partial]]:
        def failed(error: Exception, delay: float) -> None:
            self._log.warning("store unavailable for the reducer, retrying: %s", error)
            assert isinstance(error, StoreUnavailable)
            self._give_up_if_stalled(error)  # raises StepDown out of the retry

        return await retry(
            self._feed.open,
            errors=StoreUnavailable,
            backoff=FEED_OPEN_BACKOFF,
            clock=self._clock,
            on_error=failed,
        )

    def _give_up_if_stalled(self, error: StoreUnavailable) -> None:
        silent = self._clock.monotonic() - self._published_at
        if silent >= self._settings.stall_s:
            raise StepDown(
                f"no snapshot published for {silent:.1f} s (limit {self._settings.stall_s:g} s), "
                f"the store does not answer: {error}"
            )

    async def _sleep_to_next_tick(self) -> None:
        settings = self._settings
        now = self._clock.time()
        await self._clock.sleep(next_beat(now, settings.tick_s, settings.tick_delay_s) - now)
