"""The arithmetic of bench.suite, without servers: latency per batch and its
split, when a consumer group counts as settled and done, RSS start/end, the doc
block."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from bench.doc import write_block
from bench.latency import Batch, _latencies, phase
from bench.latency_path import Journey, Landing, PartialWatcher, describe
from bench.suite import Plan, Results, rss_start_end, table
from bench.throughput import SETTLE_S, MapRun, Rate, _Group
from bench.workload import EventPool


def test_events_fill_exactly_the_spread_with_the_time_first() -> None:
    events = list(EventPool(size=100).events(4_000, 1_700_000_000_000, 2_000))
    seconds = Counter(e.ts_ms // 1000 for e in events)
    assert seconds == {1_700_000_000: 2_000, 1_700_000_001: 2_000}
    first = events[1]
    assert first.value.startswith(b'{"ts":%d.%03d,' % divmod(first.ts_ms, 1000))
    assert first.key.startswith(b"app-")


def test_batch_phases_stay_inside_their_second_and_cover_it() -> None:
    phases = [phase(i) for i in range(60)]
    assert all(0.05 <= p <= 0.95 for p in phases)
    assert max(phases) - min(phases) > 0.8
    assert len({round(p, 2) for p in phases}) > 50


def test_latency_is_the_first_snapshot_with_the_bucket_complete_per_client() -> None:
    batches = [Batch(100, 100.2, 100.25, 10), Batch(101, 101.7, 101.72, 10)]
    series = [
        ("pod-1", 100.9, {100: 4}),  # partly flushed: not yet
        ("pod-1", 101.01, {100: 10}),
        ("pod-2", 101.05, {100: 10}),
        ("pod-1", 102.01, {100: 10, 101: 10}),
        ("pod-1", 103.01, {100: 10, 101: 10}),  # later snapshots do not count
    ]
    latencies, missing = _latencies(batches, series, ["pod-1", "pod-2"])
    assert latencies == pytest.approx([0.81, 0.85, 0.31])
    assert missing == 1  # pod-2 never showed bucket 101 complete


def test_group_settles_on_a_disjoint_full_assignment_then_waits_for_every_end() -> None:
    group = _Group({0: 10, 1: 10, 2: 0})
    group.on_line(0, {"assigned": [0, 1]})
    assert not group.settled(2)  # one member has not reported
    group.on_line(1, {"assigned": [2]})
    assert not group.settled(2)  # not stable for long enough yet
    group.changed_at -= SETTLE_S
    assert group.settled(2)
    group.on_line(0, {"commit": {"at": 5.0, "offsets": {"0": 10, "1": 7}}})
    assert not group.done.is_set()
    group.on_line(0, {"commit": {"at": 6.0, "offsets": {"1": 10}}})
    assert group.done.is_set()  # partition 2 is empty: nothing to wait for
    assert group.done_at == {0: 5.0, 1: 6.0}


def test_overlapping_assignments_do_not_count_as_settled() -> None:
    group = _Group({0: 1, 1: 1})
    group.on_line(0, {"assigned": [0, 1]})
    group.on_line(1, {"assigned": [1]})
    group.changed_at = time.monotonic() - 10
    assert not group.settled(2)


def test_rss_compares_the_end_with_the_point_a_tenth_of_the_events_were_folded() -> None:
    run = MapRun(
        1, 1_000, 1.0, 0, 0, 0, rss=[(0, 0, 50), (1, 90, 80), (2, 300, 100), (3, 1_000, 104)]
    )
    assert rss_start_end(run) == (100, 104)
    assert rss_start_end(MapRun(1, 1_000, 1.0, 0, 0, 0, rss=[(0, 0, 50)])) is None


def test_a_block_is_appended_once_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    write_block("suite", "first", "## Suite", doc)
    write_block("suite", "second $1 \\1", "## Suite", doc)
    text = doc.read_text()
    assert text.count("## Suite") == 1
    assert "first" not in text
    assert "second $1 \\1" in text  # taken literally, not as a regex template
    assert text.startswith("# Benchmarks\n\nintro\n")


def test_only_the_one_process_row_is_judged_against_the_ceiling() -> None:
    """Several map processes share the 2 cores with the broker and the members:
    their row reports the total against one process, and no verdict."""
    results = Results(
        raw=Rate("raw aiokafka", 600_000, 1.0),
        maps=[
            MapRun(processes=1, records=330_000, seconds=1.0, store_calls=10, flushes=2,
                   partials_written=20),
            MapRun(processes=2, records=600_000, seconds=1.0, store_calls=10, flushes=2,
                   partials_written=20),
        ],
    )  # fmt: skip
    rows = [line for line in table(Plan.quick(), results) if line.startswith("| map stage, ")]
    assert rows[0].endswith("| 55% of the ceiling | >= 100,000 and >= 50% | yes |"), rows[0]
    assert "| 50% of the ceiling each; 1.82x one process together |" in rows[1], rows[1]
    assert rows[1].endswith("| - (2 cores shared) | - |"), rows[1]
    slow = Results(raw=results.raw, maps=[MapRun(1, 240_000, 1.0, 10, 2, 20)])
    [row] = [line for line in table(Plan.quick(), slow) if line.startswith("| map stage, ")]
    assert row.endswith("| 40% of the ceiling | >= 100,000 and >= 50% | **no** |"), row


def test_a_bucket_is_stored_when_its_latest_partials_add_up_to_their_most() -> None:
    watcher = PartialWatcher()
    watcher.landings = [
        Landing(100.5, 0, 100, 4, True),
        Landing(100.6, 1, 100, 3, True),
        Landing(101.0, 0, 100, 6, False),  # partition 0 grew: 6 + 3
        Landing(101.1, 1, 101, 2, True),  # another bucket
        Landing(101.5, 0, 100, 6, False),  # rewritten unchanged: not later
    ]
    assert watcher.stored_at() == {100: 101.0, 101: 101.1}
    assert watcher.write_calls(100.0, 101.1) == 1 + 1 + 2  # created 1 call, updated 2


def test_a_journey_splits_its_latency_into_stored_to_tick_and_to_client() -> None:
    journey = Journey(phase=0.2, stored=0.85, generated=0.83 + 0.03, arrived=0.88)
    assert journey.to_tick == pytest.approx(0.01)
    assert journey.to_client == pytest.approx(0.02)
    lines = describe([journey])
    assert "0.200: 0.850 + 0.010 + 0.020 = 0.880 s" in lines[-1]
    assert journey.second_left == pytest.approx(0.8)
    assert journey.landed_after_second == pytest.approx(0.05)
    assert journey.tick_after_second == pytest.approx(0.06)
    assert any("after its second, the tick that showed it: p50 0.060 s" in x for x in lines)
    early = Journey(phase=0.05, stored=0.96, generated=0.98, arrived=1.0)
    floor = describe([journey, early])[-4]
    assert "(5.0% in) has 0.950 s of it left" in floor
    assert "(0.030 s) and the delivery (0.020 s)" in floor
