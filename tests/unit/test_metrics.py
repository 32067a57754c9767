"""The Prometheus collector, read straight from one pod's counters (no server)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.members import MemoryMembers
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.api.metrics import AggregatorCollector
from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.core.events import EventSchema
from aggregator.services.pod import Pod, PodPorts, PodSettings
from aggregator.services.reduce_stage import ReduceSettings


class OnePod:
    """The ``Backend`` of a process with a single pod."""

    def __init__(self, pod: Pod) -> None:
        self._pod = pod

    def front(self) -> Pod | None:
        return self._pod

    def pods(self) -> Sequence[Pod]:
        return [self._pod]


def make_pod() -> Pod:
    """A pod on the memory adapters, never started: only its counters are read."""
    clock = ManualClock()
    schema = EventSchema()
    store = MemoryStoreServer(clock, ttl_s=600)
    ports = PodPorts(
        source=MemoryConsumer(MemoryLog(clock), "group", "member"),
        store=MemoryStoreClient(store),
        feed=MemoryFeed(store),
        lease=MemoryLeaseClient(MemoryLeaseServer(), name="lease", namespace="ns", clock=clock),
        bus=MemoryBus(),
        registry=MemoryMembers(clock),
        clock=clock,
    )
    settings = PodSettings(
        fold=FoldSettings(schema, 1, 60, 10.0, 60.0, 65536),
        reduce=ReduceSettings(schema.dimensions, 60, 1, 1.0, 5),
        flush_interval_s=0.5,
        timings=ElectionTimings(15.0, 10.0, 2.0),
    )
    return Pod("pod-0", ports, settings, identity="pod-0_abcde")


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name, {"pod": "pod-0"})
    assert value is not None, f"{name} is missing"
    return value


def test_the_tick_summary_sum_covers_every_tick_however_many() -> None:
    # Prometheus takes _sum and _count as cumulative: a _sum that falls back
    # while _count grows reads as a counter reset, and rate(_sum)/rate(_count)
    # as a negative or absurd mean tick time.
    pod = make_pod()
    registry = CollectorRegistry()
    registry.register(AggregatorCollector(OnePod(pod)))
    ticks = 2500
    for _ in range(ticks):
        pod.reduce.stats.record(0.25)
    assert sample(registry, "aggregator_reduce_tick_seconds_count") == ticks
    assert sample(registry, "aggregator_reduce_tick_seconds_sum") == ticks * 0.25
