"""``wait_first``: wait for something, or time out, on an injected clock."""

from __future__ import annotations

import asyncio

from aggregator.adapters.memory.clock import ManualClock
from aggregator.ports.clock import SystemClock, wait_first


async def test_it_ends_when_a_future_is_done_before_the_time_runs_out() -> None:
    clock = ManualClock()
    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    second: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(wait_first(clock, 5.0, first, second))
    await clock.advance(4.9)
    assert not waiting.done()
    first.set_result(None)
    await clock.settle()
    assert await waiting == {first}
    assert not second.cancelled()  # the caller decides what to cancel


async def test_it_ends_with_nothing_done_when_the_time_runs_out() -> None:
    clock = ManualClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(wait_first(clock, 5.0, never))
    await clock.advance(5.0)
    assert await waiting == set()
    assert not never.done()


async def test_a_future_already_done_ends_the_wait_at_once() -> None:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done.set_result(1)
    assert await wait_first(ManualClock(), 0.0, done) == {done}


async def test_it_runs_on_the_system_clock_too() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert await wait_first(SystemClock(), 0.01, never) == set()
