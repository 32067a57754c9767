"""One pod on memory adapters, not started: what API tests and the websocket
benchmark serve, with nothing of Kafka, Hazelcast or a lease server behind it."""

from __future__ import annotations

from aggregator.adapters.memory.bus import MemoryBus
from aggregator.adapters.memory.clock import ManualClock
from aggregator.adapters.memory.lease import MemoryLeaseClient, MemoryLeaseServer
from aggregator.adapters.memory.log import MemoryConsumer, MemoryLog
from aggregator.adapters.memory.members import MemoryMembers
from aggregator.adapters.memory.store import MemoryFeed, MemoryStoreClient, MemoryStoreServer
from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.core.events import EventSchema
from aggregator.services.pod import Pod, PodPorts, PodSettings
from aggregator.services.reduce_stage import ReduceSettings


class OnePod:
    """The API's backend for a single pod."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod

    def front(self) -> Pod | None:
        return self.pod

    def pods(self) -> list[Pod]:
        return [self.pod]


def memory_pod(name: str = "pod-0") -> Pod:
    clock = ManualClock()
    schema = EventSchema()
    store = MemoryStoreServer(clock, ttl_s=600)
    ports = PodPorts(
        source=MemoryConsumer(MemoryLog(clock, partitions=1), "g", "m"),
        store=MemoryStoreClient(store),
        feed=MemoryFeed(store),
        lease=MemoryLeaseClient(MemoryLeaseServer(), clock=clock),
        bus=MemoryBus(),
        registry=MemoryMembers(clock),
        clock=clock,
    )
    settings = PodSettings(
        fold=FoldSettings(schema, 1, 60, 10.0, 60.0, 65536),
        reduce=ReduceSettings(schema.dimensions, 60, 1, 0.25, 5),
        flush_interval_s=0.2,
        timings=ElectionTimings(3.0, 2.0, 0.5),
    )
    return Pod(name, ports, settings)
