"""The one retry-with-backoff loop (services/retry.py)."""

from __future__ import annotations

import asyncio

import pytest

from aggregator.adapters.memory.clock import ManualClock
from aggregator.services.retry import Backoff, RetryStopped, retry


def test_the_delays_double_up_to_the_ceiling() -> None:
    delays = Backoff(first_s=0.5, max_s=5.0).delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


async def test_it_retries_the_named_errors_with_backoff_until_an_attempt_answers() -> None:
    clock = ManualClock()
    attempts: list[float] = []
    logged: list[tuple[str, float]] = []

    async def attempt() -> str:
        attempts.append(clock.monotonic())
        if len(attempts) < 4:
            raise ConnectionError(f"down {len(attempts)}")
        return "up"

    task = asyncio.ensure_future(
        retry(
            attempt,
            errors=ConnectionError,
            backoff=Backoff(first_s=1.0, max_s=2.0),
            clock=clock,
            on_error=lambda error, delay: logged.append((str(error), delay)),
        )
    )
    await clock.advance(10)
    assert await task == "up"
    assert attempts == [0.0, 1.0, 3.0, 5.0]
    assert logged == [("down 1", 1.0), ("down 2", 2.0), ("down 3", 2.0)]


async def test_other_errors_propagate_at_once() -> None:
    async def attempt() -> None:
        raise ValueError("bad configuration")

    with pytest.raises(ValueError, match="bad configuration"):
        await retry(
            attempt,
            errors=ConnectionError,
            backoff=Backoff(first_s=1.0, max_s=2.0),
            clock=ManualClock(),
            on_error=lambda error, delay: None,
        )


async def test_stopping_ends_the_sleep_and_gives_up_before_the_next_attempt() -> None:
    clock = ManualClock()
    stopping = asyncio.Event()
    attempts = 0

    async def attempt() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    task = asyncio.ensure_future(
        retry(
            attempt,
            errors=ConnectionError,
            backoff=Backoff(first_s=1.0, max_s=60.0),
            clock=clock,
            on_error=lambda error, delay: None,
            stopping=stopping,
        )
    )
    await clock.advance(7.5)  # attempts at 0, 1, 3 and 7 s; the next one at 15 s
    assert attempts == 4
    stopping.set()
    await clock.settle()  # no time passes: the sleep ends at once
    assert task.done()
    with pytest.raises(RetryStopped):
        await task
    assert attempts == 4


async def test_a_stopped_caller_makes_no_attempt() -> None:
    stopping = asyncio.Event()
    stopping.set()

    async def attempt() -> None:
        raise AssertionError("attempted while stopping")

    with pytest.raises(RetryStopped):
        await retry(
            attempt,
            errors=ConnectionError,
            backoff=Backoff(first_s=1.0, max_s=1.0),
            clock=ManualClock(),
            on_error=lambda error, delay: None,
            stopping=stopping,
        )
