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
                                                bytes_written=4 * 2**20))],
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
    assert "| 200,000 | 300,000 | 1.50x slower | within 2x | yes |" in rate, rate
    [high, _] = [line for line in lines if line.startswith("| Hazelcast writes")]
    assert "170.7 KiB per bucket write, 1.00 MiB per flush" in high, high
