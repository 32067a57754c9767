"""Prometheus metrics, read from the services' own counters at scrape time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aggregator.api.backend import Backend


class AggregatorCollector(Collector):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        pods = list(self._backend.pods())
        records = CounterMetricFamily(
            "aggregator_records", "Messages read from the source", labels=["pod"]
        )
        counted = CounterMetricFamily(
            "aggregator_events_counted", "Valid events folded into partials", labels=["pod"]
        )
        skipped = CounterMetricFamily(
            "aggregator_events_skipped",
            "Replayed messages skipped because their partial already counted them",
            labels=["pod"],
        )
        rejected = CounterMetricFamily(
            "aggregator_rejected",
            "Messages that did not count, by reason",
            labels=["pod", "reason"],
        )
        flush = HistogramMetricFamily(
            "aggregator_flush_seconds", "Time to store partials and commit", labels=["pod"]
        )
        tick = HistogramMetricFamily(
            "aggregator_reduce_tick_seconds", "Time of one reduce tick", labels=["pod"]
        )
        leader = GaugeMetricFamily(
            "aggregator_leader", "1 while this pod holds the lease", labels=["pod"]
        )
        epoch = GaugeMetricFamily(
            "aggregator_epoch", "Highest snapshot epoch this pod has seen", labels=["pod"]
        )
        clients = GaugeMetricFamily(
            "aggregator_websocket_clients", "Connected websocket clients", labels=["pod"]
        )
        stale = CounterMetricFamily(
            "aggregator_stale_snapshots_dropped",
            "Snapshots dropped because a newer epoch was already seen",
            labels=["pod"],
        )
        for pod in pods:
            name = pod.name
            stats = pod.map.stats
            records.add_metric([name], stats.records)
            counted.add_metric([name], stats.counted)
            skipped.add_metric([name], stats.skipped)
            for reason, count in sorted(stats.dropped.items()):
                rejected.add_metric([name, reason], count)
            for family, durations in (
                (flush, stats.flush_seconds),
                (tick, pod.reduce.stats.tick_seconds),
            ):
                family.add_metric([name], durations.cumulative(), durations.total_seconds)
            leader.add_metric([name], 1.0 if pod.elector.is_leader() else 0.0)
            epoch.add_metric([name], float(pod.hub.highest_epoch))
            clients.add_metric([name], float(pod.hub.clients))
            stale.add_metric([name], pod.hub.stale_dropped)
        yield from (records, counted, skipped, rejected, flush, tick, leader, epoch, clients, stale)
        yield from _event_loop()


def _event_loop() -> Iterator[Metric]:
    """The process's asyncio tasks: flat in a healthy pod (the soak judges by it)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # scraped from outside the event loop
        return
    yield GaugeMetricFamily(
        "aggregator_asyncio_tasks", "Asyncio tasks not yet done in this process", len(tasks)
    )
