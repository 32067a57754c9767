"""Retry with exponential backoff: the one loop every "keep trying until it
answers" in the services and the wiring goes through.

The attempt is retried only for the errors named; anything else propagates.
Between attempts the helper sleeps on the injected clock (so tests can move
time by hand), doubling the delay up to a ceiling.  ``stopping``, when given, is
looked at before every attempt and ends the sleep between two: once it is set,
``RetryStopped`` is raised instead of trying again, so a shutdown never waits
on a server that does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from aggregator.ports.clock import Clock, wait_first

T = TypeVar("T")


class RetryStopped(Exception):
    """The caller is stopping: the retry loop gave up without a result."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``first_s``, then doubled each time, at most ``max_s``."""

    first_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(2 * delay, self.max_s)


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    errors: type[Exception] | tuple[type[Exception], ...],
    backoff: Backoff,
    clock: Clock,
    on_error: Callable[[Exception, float], None],
    stopping: asyncio.Event | None = None,
) -> T:
    """``await attempt()`` until it returns; after each failure with one of
    ``errors``, call ``on_error(error, delay)`` (log it) and sleep ``delay``.

    Raises ``RetryStopped`` when ``stopping`` is set before an attempt (it cuts
    the sleep short).
    """
    for delay in backoff.delays():
        if stopping is not None and stopping.is_set():
            raise RetryStopped
        try:
            return await attempt()
        except errors as error:
            on_error(error, delay)
        if stopping is None:
            await clock.sleep(delay)
            continue
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await wait_first(clock, delay, stopped)
        finally:
            stopped.cancel()
    raise AssertionError("unreachable: the backoff never ends")
