"""The in-memory topic keeps events for its retention, as Kafka does: offsets never
move, and a reader behind the oldest kept record reads on from it."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.log import TRIM_EVERY, MemoryLog


def test_records_older_than_the_retention_go_and_offsets_stay() -> None:
    clock = ManualClock()
    log = MemoryLog(clock, partitions=1, retention_s=60)
    for n in range(TRIM_EVERY):
        assert log.append(0, b"old %d" % n) == n
    clock.jump_wall(61)
    offsets = [log.append(0, b"new %d" % n) for n in range(TRIM_EVERY + 1)]
    assert offsets[0] == TRIM_EVERY  # numbering goes on
    assert log.start_offset(0) == TRIM_EVERY  # every old record is gone
    assert log.end_offset(0) == 2 * TRIM_EVERY + 1
    behind = log.read(0, 5, 3)  # a reader still at an old offset
    assert [r.offset for r in behind] == [TRIM_EVERY, TRIM_EVERY + 1, TRIM_EVERY + 2]
    assert behind[0].value == b"new 0"
    assert [r.value for r in log.read(0, TRIM_EVERY + 7, 1)] == [b"new 7"]


def test_without_a_retention_everything_stays() -> None:
    clock = ManualClock()
    log = MemoryLog(clock, partitions=1)
    for n in range(TRIM_EVERY + 1):
        log.append(0, b"%d" % n)
    clock.jump_wall(10_000)
    log.append(0, b"late")
    assert log.start_offset(0) == 0
    assert log.read(0, 0, 1)[0].value == b"0"
    with pytest.raises(ValueError, match="positive"):
        MemoryLog(clock, retention_s=0)


def test_a_kept_event_costs_its_size_not_orjsons_block() -> None:
    log = MemoryLog(ManualClock(), partitions=1)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(2000):  # the producer's bytes go once appended, as they would
            log.append(0, orjson.dumps({"app": "app-1", "n": n, "pad": "x" * 90}))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert kept / 2000 < 600, kept / 2000  # 4 KiB each without the copy
