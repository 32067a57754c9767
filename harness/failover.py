"""Failover, measured: signal the leader, time until a survivor pushes a new leader's snapshot."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass

from harness.pods import Cluster
from harness.snapshots import Seen, SnapshotRecorder


@dataclass(frozen=True)
class Failover:
    how: str  # "SIGTERM" or "SIGKILL"
    seconds: float  # signal sent -> first snapshot of the new leader at a surviving pod
    old_leader: str
    old_epoch: int
    new_leader: str
    new_epoch: int
    exit_status: int | None


async def current_leader(cluster: Cluster, recorder: SnapshotRecorder, timeout_s: float) -> Seen:
    """A snapshot of this cluster's leader, pushed by some pod after now."""
    since = time.monotonic()
    prefix = cluster.config.prefix
    return await recorder.wait_for(
        lambda s: s.received_at > since and s.leader.startswith(prefix),
        timeout_s,
        "snapshot from this cluster's leader",
    )


async def fail_leader(
    cluster: Cluster, recorder: SnapshotRecorder, sig: signal.Signals, timeout_s: float
) -> Failover:
    """Signal the publishing leader; time until a surviving pod pushes a new leader's
    snapshot with a higher epoch."""
    latest = await current_leader(cluster, recorder, timeout_s=30)
    leader = cluster.by_identity(latest.leader)
    survivors = {pod.name for pod in cluster.alive() if pod is not leader}
    assert survivors, "no pod would survive the leader"
    sent = time.monotonic()
    leader.signal(sig)
    try:
        new = await recorder.wait_for(
            lambda s: (
                s.received_at > sent
                and s.observer in survivors
                and s.leader != latest.leader
                and s.epoch > latest.epoch
            ),
            timeout_s,
            f"new leader after {sig.name} of {leader.name}",
        )
    except AssertionError as error:
        statuses = {pod.name: pod.process.poll() for pod in cluster.pods}
        raise AssertionError(f"{error}; exit status by pod (None: running): {statuses}") from None
    status: int | None
    try:
        status = await asyncio.to_thread(leader.wait, 30.0)
    except subprocess.TimeoutExpired:
        status = None
    return Failover(
        sig.name, new.received_at - sent, latest.leader, latest.epoch, new.leader, new.epoch,
        status,
    )  # fmt: skip
