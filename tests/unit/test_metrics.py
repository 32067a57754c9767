"""The Prometheus collector, read straight from one pod's counters (no server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.api.metrics import AggregatorCollector
from harness.memory_pod import OnePod, memory_pod


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"pod": "pod-0", **labels})
    assert value is not None, f"{name} is missing"
    return value


def test_the_tick_sum_covers_every_tick_however_many() -> None:
    # Prometheus takes _sum and _count as cumulative: a _sum that falls back
    # while _count grows reads as a counter reset, and rate(_sum)/rate(_count)
    # as a negative or absurd mean tick time.
    pod = memory_pod()
    registry = CollectorRegistry()
    registry.register(AggregatorCollector(OnePod(pod)))
    ticks = 2500
    for _ in range(ticks):
        pod.reduce.stats.record(0.25)
    assert sample(registry, "aggregator_reduce_tick_seconds_count") == ticks
    assert sample(registry, "aggregator_reduce_tick_seconds_sum") == ticks * 0.25


def test_flush_and_tick_durations_are_histograms_with_buckets_around_their_targets() -> None:
    # Histograms, not summaries: bucket counts of every pod add up, so a p99
    # over the deployment is histogram_quantile(0.99, sum by (le) (rate(...))).
    pod = memory_pod()
    registry = CollectorRegistry()
    registry.register(AggregatorCollector(OnePod(pod)))
    for seconds in (0.004, 0.05, 0.06, 3.0):  # 0.05: the p99 target, on a bound
        pod.reduce.stats.record(seconds)
    for seconds in (0.002, 0.5, 0.7, 11.0):  # 0.5: the flush interval, on a bound
        pod.map.stats.flush_seconds.observe(seconds)

    tick = "aggregator_reduce_tick_seconds_bucket"
    assert [sample(registry, tick, le=le) for le in ("0.005", "0.05", "0.075", "2.5", "+Inf")] == [
        1.0, 2.0, 3.0, 3.0, 4.0,
    ]  # fmt: skip
    flush = "aggregator_flush_seconds_bucket"
    assert [sample(registry, flush, le=le) for le in ("0.005", "0.5", "1.0", "10.0", "+Inf")] == [
        1.0, 2.0, 3.0, 3.0, 4.0,
    ]  # fmt: skip
    assert sample(registry, "aggregator_flush_seconds_count") == pod.map.stats.flushes == 4
    assert sample(registry, "aggregator_flush_seconds_sum") == 0.002 + 0.5 + 0.7 + 11.0

    exposition = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    for name in ("aggregator_flush_seconds", "aggregator_reduce_tick_seconds"):
        assert families[name].type == "histogram"
        assert families[name].documentation
