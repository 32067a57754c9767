"""When the Hazelcast feed reads the whole map again after a member change.

Entry events can be lost while partitions move, and a member that joins keeps
receiving partitions for a while; the feed reads everything again soon after the
change and then twice more as the cluster settles."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aggregator.adapters.hazelcast.feed import HazelcastFeed


class _Map:
    def __init__(self) -> None:
        self.reads = 0

    async def entry_set(self) -> list[Any]:
        self.reads += 1
        return []


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _feed(clock: _Clock) -> tuple[HazelcastFeed, _Map]:
    running = SimpleNamespace(is_running=lambda: True)
    feed = HazelcastFeed(
        SimpleNamespace(lifecycle_service=running),  # type: ignore[arg-type]
        resync_after_s=2.0,
        settle_s=(10.0, 30.0),
        monotonic=clock,
    )
    imap = _Map()
    feed._imap = imap  # type: ignore[assignment]  # as open() leaves it
    feed._registration = "listening"
    return feed, imap


async def _reads_at(
    feed: HazelcastFeed, imap: _Map, clock: _Clock, times: list[float]
) -> list[int]:
    seen = []
    for at in times:
        clock.now = at
        list(await feed.changes())
        seen.append(imap.reads)
    return seen


async def test_a_member_change_brings_a_full_read_soon_and_two_more_as_it_settles() -> None:
    clock = _Clock()
    feed, imap = _feed(clock)
    feed._on_member_change(object())
    times = [101.9, 102.0, 102.5, 109.9, 110.0, 120.0, 129.9, 130.0, 200.0]
    assert await _reads_at(feed, imap, clock, times) == [0, 1, 1, 1, 2, 2, 2, 3, 3]


async def test_another_change_starts_the_series_again() -> None:
    clock = _Clock()
    feed, imap = _feed(clock)
    feed._on_member_change(object())
    assert await _reads_at(feed, imap, clock, [102.0, 105.0]) == [1, 1]
    feed._on_member_change(object())  # at 105: due at 107, 115 and 135
    times = [106.9, 107.0, 110.0, 115.0, 130.0, 135.0]
    assert await _reads_at(feed, imap, clock, times) == [1, 2, 2, 3, 3, 4]


async def test_without_a_change_only_the_events_are_read() -> None:
    clock = _Clock()
    feed, imap = _feed(clock)
    assert await _reads_at(feed, imap, clock, [101.0, 200.0, 1000.0]) == [0, 0, 0]
