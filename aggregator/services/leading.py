"""The term this pod leads, and the task that runs during it (the elector's
``on_started_leading``, the reduce stage in a pod).

``start(epoch)`` begins a term and runs the task; ``end(reason)`` ends it:
cancel the task, wait for it (at most ``cancel_wait_s`` on the clock), then run
``on_stopped_leading``.  Ending is shielded: once begun it completes even if the
caller is cancelled, and a second caller waits for the same ending.  A task that
fails calls ``on_failed`` (the elector wakes up and gives the lease up); one that
returns is logged and the term goes on.  A task that cannot do its work from
this pod raises ``StepDown``: the same path, logged in one line, without a
traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aggregator.core.types import Epoch
from aggregator.ports.clock import Clock, wait_first


class StepDown(Exception):
    """Raised by a leading task that cannot do its work from this pod (the
    reducer that cannot publish): the elector gives the lease up so a pod that
    can takes over."""


class LeadingTerm:
    def __init__(
        self,
        clock: Clock,
        on_started_leading: Callable[[int], Awaitable[None]],
        on_stopped_leading: Callable[[], Awaitable[None]] | None,
        *,
        on_failed: Callable[[], None],
        cancel_wait_s: float,
        identity: str,
        lease: str,
        logger: logging.Logger,
    ) -> None:
        self._clock = clock
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_failed = on_failed
        self._cancel_wait_s = cancel_wait_s
        self._identity = identity
        self._lease = lease
        self._log = logger
        self.epoch: Epoch | None = None
        """The epoch of the term we lead; None while following."""
        self._task: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None

    def start(self, epoch: Epoch) -> None:
        self.epoch = epoch
        self._log.info(
            "Started leading as %s with epoch %d (lease %s)", self._identity, epoch, self._lease
        )
        task = asyncio.ensure_future(self._on_started_leading(epoch))
        task.add_done_callback(self._done)
        self._task = task

    def failure(self) -> BaseException | None:
        """The error the task of the current term ended with, if it failed."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def end(self, reason: str) -> None:
        """End the term (if any); wait for an ending already under way."""
        if self.epoch is not None:
            epoch, task = self.epoch, self._task
            self.epoch = None
            self._task = None
            self._ending = asyncio.ensure_future(self._end(epoch, task, reason))
        if self._ending is not None:
            await asyncio.shield(self._ending)

    def _done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            self._on_failed()
        elif task is self._task:
            self._log.info("The leading task returned; still holding the lease")

    async def _end(self, epoch: Epoch, task: asyncio.Task[None] | None, reason: str) -> None:
        if task is not None and not task.done():
            task.cancel()
            await wait_first(self._clock, self._cancel_wait_s, task)
            if not task.done():
                self._log.error("The leading task ignores cancellation; going on without it")
        self._log.info("Stopped leading as %s (epoch %d): %s", self._identity, epoch, reason)
        if self._on_stopped_leading is not None:
            try:
                await self._on_stopped_leading()
            except Exception:
                self._log.exception("on_stopped_leading failed")
