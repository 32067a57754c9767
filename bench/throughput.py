"""Consumer throughput on one topic: our map stage in 1..N processes and the
raw aiokafka ceiling (parent side; the child is ``bench.map_worker``; the
peers are ``bench.peers``).

Every run reads the whole topic from the beginning in a consumer group of its
own; ours also writes into a Hazelcast scope of its own.  A rate is records
divided by the time from the first record any process handled to the moment
the last record was done: for ours, folded, stored in Hazelcast and committed;
for the raw consumer, fetched.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc import Child, python_module
from harness.pods import clean_environment

SETTLE_S = 1.0
"""The group must keep one assignment this long before ``go``."""


@dataclass(frozen=True)
class Servers:
    bootstrap: str
    hazelcast_members: list[str]
    hazelcast_cluster: str


@dataclass
class MapRun:
    processes: int
    records: int
    seconds: float
    store_calls: int
    flushes: int
    partials_written: int
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    """(time, records folded, RSS KiB) of the first process, every 0.25 s."""
    per_process: list[tuple[int, float]] = field(default_factory=list)
    """(records, seconds from its first record to its last commit) per process."""
    reassigned: int = 0
    """Assignment changes after ``go`` (0 in a clean run)."""
    bytes_written: int = 0
    """Bytes of the partials offered to Hazelcast (each one's full encoded state)."""

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def per_process_events_per_s(self) -> float:
        return self.events_per_s / self.processes

    @property
    def calls_per_flush(self) -> float:
        return self.store_calls / max(1, self.flushes)

    @property
    def calls_per_1000_events(self) -> float:
        return 1000 * self.store_calls / max(1, self.records)


@dataclass(frozen=True)
class Rate:
    name: str
    records: int
    seconds: float
    max_rss_kib: int = 0
    label: str = ""
    """A short name, for the figure."""
    checked: str = ""
    """A peer's results against the brute force ("counts exact", or what differs)."""

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds


class _Group:
    """What the workers of one run reported."""

    def __init__(self, ends: Mapping[int, int]) -> None:
        self.ends = dict(ends)
        self.assigned: dict[int, list[int]] = {}
        self.changed_at = time.monotonic()
        self.done_at: dict[int, float] = {}
        self.committed: dict[int, int] = {}
        self.progress: dict[int, tuple[int, bool]] = {}
        """Per worker: records folded, and whether its map stage is ready."""
        self.done = asyncio.Event()

    def on_line(self, worker: int, line: dict[str, Any]) -> None:
        if "assigned" in line:
            self.assigned[worker] = list(line["assigned"])
            self.changed_at = time.monotonic()
        if "progress" in line:
            self.progress[worker] = (int(line["progress"]), bool(line["ready"]))
        commit = line.get("commit")
        if commit is not None:
            for text, offset in commit["offsets"].items():
                partition = int(text)
                self.committed[partition] = max(offset, self.committed.get(partition, 0))
                if offset >= self.ends.get(partition, 0) and partition not in self.done_at:
                    self.done_at[partition] = float(commit["at"])
            if all(p in self.done_at for p, end in self.ends.items() if end > 0):
                self.done.set()

    def settled(self, workers: int) -> bool:
        if len(self.assigned) < workers:
            return False
        owned = [p for parts in self.assigned.values() for p in parts]
        if sorted(owned) != sorted(self.ends) or len(set(owned)) != len(owned):
            return False
        if workers <= len(self.ends) and not all(self.assigned.values()):
            return False
        return time.monotonic() - self.changed_at >= SETTLE_S


def map_scope(prefix: str, processes: int) -> str:
    """The Hazelcast scope ``run_ours`` gives its map processes."""
    return f"{prefix}-map{processes}"


async def run_ours(
    servers: Servers, topic: str, ends: Mapping[int, int], processes: int, prefix: str, logs: Path
) -> MapRun:
    """Our map stage in ``processes`` processes of one consumer group."""
    group = _Group(ends)
    records = sum(ends.values())
    scope = map_scope(prefix, processes)
    env = clean_environment() | {
        "AGG_KAFKA_BOOTSTRAP_SERVERS": servers.bootstrap,
        "AGG_KAFKA_TOPIC": topic,
        "AGG_KAFKA_GROUP": f"{prefix}-map{processes}",
        "AGG_KAFKA_DLQ_TOPIC": "",
        "AGG_HAZELCAST_MEMBERS": ",".join(servers.hazelcast_members),
        "AGG_HAZELCAST_CLUSTER_NAME": servers.hazelcast_cluster,
        "AGG_HAZELCAST_SCOPE": scope,
    }
    workers: list[Child] = []
    try:
        for index in range(processes):
            workers.append(
                await Child.start(
                    python_module("bench.map_worker", "ours"),
                    logs / f"map{processes}-{index}.log",
                    env=env | {"AGG_POD_NAME": f"{prefix}-map{processes}-{index}"},
                    on_line=functools.partial(group.on_line, index),
                )
            )
        await _until(lambda: group.settled(processes), 90, "the consumer group to settle", workers)
        for worker in workers:
            worker.send("go")
        budget = 60 + records / 20_000  # 20k events/s at the very least
        await _until(group.done.is_set, budget, "every record to be committed", workers,
                     lambda: f"committed {group.committed} of {group.ends}; assignments "
                             f"{group.assigned}; (folded, ready) {group.progress}")  # fmt: skip
        for worker in workers:
            worker.send("stop")
        results = [await worker.finish(60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    return _map_run(processes, records, results, group)


def _map_run(processes: int, records: int, results: list[dict[str, Any]], group: _Group) -> MapRun:
    starts = [r["first_record_at"] for r in results if r["first_record_at"] is not None]
    finished = max(group.done_at.values())
    calls = flushes = written = written_bytes = 0
    per_process = []
    for result in results:
        base = result["baseline"]
        last = result["commits"][-1] if result["commits"] else base
        calls += last["store_calls"] - base["store_calls"]
        flushes += len(result["commits"])  # a flush that stored something commits once
        written += last["partials_written"] - base["partials_written"]
        written_bytes += last.get("bytes_written", 0) - base.get("bytes_written", 0)
        if result["commits"] and result["first_record_at"] is not None:
            per_process.append(
                (last["records"] - base["records"], last["at"] - result["first_record_at"])
            )
    return MapRun(
        processes=processes,
        records=records,
        seconds=finished - min(starts),
        store_calls=calls,
        flushes=flushes,
        partials_written=written,
        rss=[(t, n, kib) for t, n, kib in results[0]["rss"]],
        per_process=per_process,
        reassigned=sum(len(r["assignments"]) - 1 for r in results),
        bytes_written=written_bytes,
    )


async def run_raw(bootstrap: str, topic: str, records: int, prefix: str, logs: Path) -> Rate:
    """The ceiling: a bare aiokafka consumer in one process."""
    child = await Child.start(
        python_module(
            "bench.map_worker", "raw", "--bootstrap", bootstrap, "--topic", topic,
            "--group", f"{prefix}-raw", "--expected", str(records),
        ),
        logs / "raw.log",
        env=clean_environment(),
    )  # fmt: skip
    result = await child.finish(120 + records / 20_000)
    return Rate(
        "raw aiokafka consumer",
        int(result["records"]),
        result["last_record_at"] - result["first_record_at"],
    )


async def _until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    workers: list[Child],
    state: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError(
                f"a benchmark worker exited while waiting for {what}:\n{dead[0].tail()}"
            )
        if time.monotonic() > deadline:
            logs = ", ".join(str(w.log) for w in workers)
            raise RuntimeError(
                f"waited {timeout_s:.0f} s for {what}, in vain; {state()} (logs: {logs})"
            )
        await asyncio.sleep(0.05)
