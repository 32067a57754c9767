"""bench.million_keys judges its figures against issue 17's targets."""

from __future__ import annotations

from bench.million_keys import MillionKeys, table
from bench.reduce_scale import ReduceScale
from bench.throughput import MapRun


def test_rows_hold_the_targets_and_the_same_run_baselines() -> None:
    result = MillionKeys(
        reduce=[ReduceScale(1_000, 9.0, 15.0, 60, 200_000, 300.0),
                ReduceScale(1_000_000, 12.0, 140.0, 60, 900_000, 1_500.0)],
        maps=[("200 apps", MapRun(1, 300_000, 1.0, 10, 4, 24, bytes_written=24 * 1024)),
              ("300,000 distinct apps", MapRun(1, 300_000, 1.5, 10, 4, 24,
                                                bytes_written=4 * 2**20)),
              ("300,000 distinct apps", MapRun(1, 300_000, 3.0, 10, 4, 24)),
              ("200 apps", MapRun(1, 300_000, 1.2, 10, 4, 24)),
              ("200 apps", MapRun(1, 300_000, 1.0, 10, 4, 24)),
              ("300,000 distinct apps", MapRun(1, 300_000, 1.8, 10, 4, 24))],
    )  # fmt: skip
    lines = table(result, "python -m bench.million_keys").splitlines()
    [tick] = [line for line in lines if line.startswith("| reduce tick")]
    assert "| 12.0 / 140.0 | 9.0 / 15.0 |" in tick, tick
    assert tick.endswith("| **no** |"), tick
    [rss] = [line for line in lines if line.startswith("| reducer RSS")]
    assert "| 879 | 195 |" in rss, rss
    assert rss.endswith("| yes |"), rss
    [first] = [line for line in lines if line.startswith("| first snapshot")]
    assert "| 1500 | 300 |" in first, first
    [rate] = [line for line in lines if line.startswith("| map stage")]
    # rounds paired in order of appearance: 1.50x, 2.50x, 1.80x; the median judges
    assert "(300,000 distinct apps vs 200 apps; median of 3 rounds)" in rate, rate
    assert "| 166,667 | 300,000 | 1.80x slower (rounds: 1.50x, 2.50x, 1.80x) |" in rate, rate
    assert rate.endswith("| within 2x | yes |"), rate
    [high, _] = [line for line in lines if line.startswith("| Hazelcast writes")]
    assert "24 bucket writes" in high, high


def test_a_median_over_the_target_is_a_no() -> None:
    maps = [("200 apps", MapRun(1, 300_000, 1.0, 10, 4, 24)),
            ("9 distinct apps", MapRun(1, 300_000, 2.1, 10, 4, 24))]  # fmt: skip
    [rate] = [
        line
        for line in table(MillionKeys([], maps), "c").splitlines()
        if line.startswith("| map stage")
    ]
    assert rate.endswith("| 2.10x slower (rounds: 2.10x) | within 2x | **no** |"), rate
