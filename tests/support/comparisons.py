"""The comparisons: what the store, the dead-letter topic and the snapshots hold,
against the brute-force ``Truth``; ``check_everything`` runs them all after a stream.

Used by test_map_exactness.py and test_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aggregator.core.partial import Agg, Partial, merged
from aggregator.ports.store import PartialKey
from harness.pods import Cluster
from harness.snapshots import SnapshotRecorder, fencing_violations
from tests.support.oracle import distinct_ok, nearest_rank_value, quantile_ok
from tests.support.readback import (
    TopicMessage,
    read_topic,
    stored_partials,
    wait_caught_up,
)
from tests.support.stream import DIMENSIONS, REASONS, StreamMaker
from tests.support.truth import Truth

if TYPE_CHECKING:
    from tests.fixtures.kafka_hazelcast import HazelcastCluster, KafkaServer


def _agg_problems(where: str, expected: Agg, actual: Agg) -> list[str]:
    problems = []
    for name in ("count", "vcount", "hist", "regs"):
        if getattr(expected, name) != getattr(actual, name):
            mine, theirs = getattr(expected, name), getattr(actual, name)
            if isinstance(mine, dict):
                mine = sum(mine.values()) if name == "hist" else len(mine)
                theirs = sum(theirs.values()) if name == "hist" else len(theirs)
                name += " (total)" if name == "hist" else " (registers)"
            problems.append(f"{where}: {name} {theirs}, expected {mine}")
    if expected.vcount and (expected.vmin, expected.vmax) != (actual.vmin, actual.vmax):
        problems.append(
            f"{where}: min/max {actual.vmin}/{actual.vmax}, expected {expected.vmin}/"
            f"{expected.vmax}"
        )
    if not math.isclose(expected.vsum, actual.vsum, rel_tol=1e-9, abs_tol=1e-6):
        problems.append(f"{where}: value sum {actual.vsum}, expected {expected.vsum}")
    return problems


def partial_problems(where: str, expected: Partial, actual: Partial, *, offset: bool) -> list[str]:
    """Every difference between two partials (values summed in another order may
    differ in the last bits of their float sum, nothing else may)."""
    problems = _agg_problems(f"{where} total", expected.total, actual.total)
    for dim, (mine, theirs) in enumerate(zip(expected.by, actual.by, strict=True)):
        name = DIMENSIONS[dim]
        if set(mine) != set(theirs):
            problems.append(f"{where} {name} keys {sorted(theirs)}, expected {sorted(mine)}")
        for key in sorted(set(mine) & set(theirs)):
            problems += _agg_problems(f"{where} {name}={key}", mine[key], theirs[key])
    if expected.dropped != actual.dropped:
        problems.append(f"{where}: rejected {actual.dropped}, expected {expected.dropped}")
    if offset and expected.offset != actual.offset:
        problems.append(f"{where}: offset {actual.offset}, expected {expected.offset}")
    return problems


def store_problems(truth: Truth, stored: Sequence[tuple[PartialKey, Partial]]) -> list[str]:
    """Each stored (partition, bucket) partial, and their merge per bucket through
    the core's ``merged``, against the brute-force answer.  A sealed bucket's
    segments (``PartialKey.segment``) are added into it first."""
    problems = []
    actual: dict[tuple[int, int], Partial] = {}
    for key, partial in sorted(stored, key=lambda entry: entry[0]):
        cell = (key.partition, key.bucket)
        if cell in actual:
            actual[cell].merge_from(partial)
        else:
            actual[cell] = partial.copy()
    for key, partial in stored:
        if partial.bucket != key.bucket:
            problems.append(f"entry {key} holds bucket {partial.bucket}")
    expected = truth.cells()
    for cell in sorted(set(actual) - set(expected)):
        problems.append(f"partition {cell[0]} bucket {cell[1]}: stored, expected none")
    for cell in sorted(set(expected) - set(actual)):
        problems.append(f"partition {cell[0]} bucket {cell[1]}: missing from the store")
    for cell in sorted(set(expected) & set(actual)):
        where = f"partition {cell[0]} bucket {cell[1]}"
        problems += partial_problems(where, expected[cell], actual[cell], offset=True)
    by_bucket: dict[int, list[Partial]] = defaultdict(list)
    for partial in actual.values():
        by_bucket[partial.bucket].append(partial)
    for bucket, partial in sorted(truth.buckets().items()):
        combined = merged(by_bucket.get(bucket, []), bucket, len(DIMENSIONS))
        problems += partial_problems(f"bucket {bucket}", partial, combined, offset=False)
    return problems


# -- the dead-letter topic ----------------------------------------------------------------


def dead_letter_problems(
    truth: Truth, letters: Sequence[TopicMessage], source_topic: str
) -> tuple[list[str], list[tuple[int, int]]]:
    """Problems, and the (partition, offset) origins of letters that repeat one.

    Delivery is at-least-once: the map stage delivers dead letters before it stores
    the partials and commits, so a pod that dies (or is fenced) in between leaves
    letters whose source offsets the next owner folds, and sends, again.  Those
    repeats must be identical copies; every rejected message must be there, and
    nothing else."""
    originals = {(m.partition, m.offset): (m, reason) for m, reason in truth.rejected}
    problems = []
    seen: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        headers = letter.headers
        ours = dict(headers[-5:])
        if set(ours) != {
            "reason", "source-topic", "source-partition", "source-offset", "source-timestamp"
        }:  # fmt: skip
            problems.append(f"dead letter without its origin headers: {letter}")
            continue
        origin = (int(ours["source-partition"]), int(ours["source-offset"]))
        seen[origin] += 1
        found = originals.get(origin)
        if found is None:
            problems.append(f"dead letter for {origin}, which is no rejected message: {letter}")
            continue
        message, reason = found
        expected = (
            message.value,
            message.key,
            message.headers,
            reason,
            source_topic,
            message.timestamp_ms,
        )
        actual = (
            letter.value,
            letter.key,
            headers[:-5],
            ours["reason"].decode(),
            ours["source-topic"].decode(),
            int(ours["source-timestamp"]),
        )
        if actual != expected:
            problems.append(f"dead letter for {origin} is {actual}, expected {expected}")
    missing = sorted(set(originals) - set(seen))
    if missing:
        problems.append(f"{len(missing)} rejected messages have no dead letter: {missing[:10]}")
    return problems, sorted(origin for origin, copies in seen.items() if copies > 1)


# -- the snapshot -------------------------------------------------------------------------


def covers(snapshot: dict[str, Any], truth: Truth) -> bool:
    """The snapshot's window holds every event and every rejected message."""
    buckets = [e.bucket for e in truth.events()] + [
        m.timestamp_ms // 1000 for m, _ in truth.rejected
    ]
    window = snapshot["window"]
    return bool(buckets) and window["start"] <= min(buckets) and max(buckets) < window["end"]


def snapshot_problems(snapshot: dict[str, Any], truth: Truth) -> list[str]:
    """A snapshot whose window covers every message against the brute force: counts
    and series exact, distinct within 3 standard errors, quantiles within 1 %."""
    problems = []
    events = truth.events()
    total = snapshot["total"]
    if not covers(snapshot, truth):
        problems.append(f"window {snapshot['window']} does not cover every message")
    if total["count"] != len(events):
        problems.append(f"total count {total['count']}, expected {len(events)}")
    seconds = snapshot["window"]["seconds"]
    if not math.isclose(total["rate_per_s"], len(events) / seconds, rel_tol=1e-9):
        problems.append(f"rate {total['rate_per_s']}, expected {len(events) / seconds}")
    devices = {e.distinct for e in events if e.distinct is not None}
    if not distinct_ok(total["distinct"], len(devices)):
        problems.append(f"distinct {total['distinct']}, exact {len(devices)}")
    problems += _value_problems(total["value"], [e.value for e in events if e.value is not None])
    series = Counter(e.bucket for e in events)
    shown = {row["start"]: row["count"] for row in snapshot["series"]}
    for bucket in sorted(set(series) | {b for b, c in shown.items() if c}):
        if shown.get(bucket) != series.get(bucket, 0):
            problems.append(f"series {bucket}: {shown.get(bucket)}, expected {series[bucket]}")
    for dim, name in enumerate(DIMENSIONS):
        rows = {row["key"]: row for row in snapshot["by"][name]}
        keys = {e.keys[dim] for e in events}
        if set(rows) != keys:
            problems.append(f"by {name}: keys {sorted(rows)}, expected {sorted(keys)}")
        for key in sorted(set(rows) & keys):
            mine = [e for e in events if e.keys[dim] == key]
            row = rows[key]
            if row["count"] != len(mine):
                problems.append(f"by {name}={key}: count {row['count']}, expected {len(mine)}")
            exact = len({e.distinct for e in mine if e.distinct is not None})
            if not distinct_ok(row["distinct"], exact):
                problems.append(f"by {name}={key}: distinct {row['distinct']}, exact {exact}")
            values = [e.value for e in mine if e.value is not None]
            if values:
                p99 = nearest_rank_value(values, 0.99)
                if not quantile_ok(row["p99"], p99):
                    problems.append(f"by {name}={key}: p99 {row['p99']}, exact {p99}")
    reasons = truth.reasons()
    expected_rejected = {reason: reasons.get(reason, 0) for reason in REASONS}
    rejected = snapshot["rejected"]
    if rejected["by_reason"] != expected_rejected or rejected["count"] != len(truth.rejected):
        problems.append(f"rejected {rejected}, expected {expected_rejected}")
    if (snapshot.get("late"), snapshot.get("future")) != (0, 0):
        problems.append(f"late {snapshot.get('late')}, future {snapshot.get('future')}")
    return problems


def _value_problems(shown: dict[str, Any] | None, values: list[float]) -> list[str]:
    if not values:
        return [] if shown is None else [f"value statistics {shown} without any value"]
    if shown is None:
        return ["no value statistics"]
    problems = []
    exact = {"count": len(values), "min": min(values), "max": max(values)}
    if {name: shown[name] for name in exact} != exact:
        problems.append(f"value {shown}, expected {exact}")
    if not math.isclose(shown["mean"], sum(values) / len(values), rel_tol=1e-9):
        problems.append(f"value mean {shown['mean']}, expected {sum(values) / len(values)}")
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        if not quantile_ok(shown[name], nearest_rank_value(values, q)):
            problems.append(f"value {name} {shown[name]}, exact {nearest_rank_value(values, q)}")
    return problems


async def settled_snapshot(cluster: Cluster, truth: Truth, timeout_s: float) -> dict[str, Any]:
    """The latest snapshot of a live pod once it covers every message and agrees with
    the brute force, or the last one seen when ``timeout_s`` runs out (the caller
    then shows its differences)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        for pod in cluster.alive():
            with contextlib.suppress(Exception):
                snapshot: dict[str, Any] = await pod.get("/api/stats")
                if str(snapshot.get("leader", "")).startswith(cluster.config.prefix):
                    last = snapshot
                    if not snapshot_problems(snapshot, truth):
                        return snapshot
        if time.monotonic() > deadline:
            assert last is not None, "no live pod served a snapshot of this cluster"
            return last
        await asyncio.sleep(1.0)


def history_problems(recorder: SnapshotRecorder, prefix: str, truth: Truth) -> list[str]:
    """Over every snapshot recorded: one leader per epoch and leader changes raise
    it (``fencing_violations``), each pod pushed epochs that never went down, and no
    snapshot ever counted more than there was (no transient double count)."""
    mine = recorder.mine(prefix)
    if not mine:
        return ["no snapshot from this scenario's leaders"]
    problems = fencing_violations(mine)
    highest: dict[str, int] = {}
    for seen in mine:
        observer, epoch = seen.observer, seen.epoch
        if epoch < highest.get(observer, -1):
            problems.append(f"{observer} pushed epoch {epoch} after {highest[observer]}")
        highest[observer] = max(highest.get(observer, -1), epoch)
        if seen.count > len(truth.valid) or seen.rejected > len(truth.rejected):
            problems.append(
                f"snapshot of epoch {epoch} counted {seen.count} events / {seen.rejected} "
                f"rejected; there are only {len(truth.valid)} / {len(truth.rejected)}"
            )
    return problems


# -- after the stream ------------------------------------------------------------------


async def check_everything(
    cluster: Cluster,
    recorder: SnapshotRecorder,
    kafka: KafkaServer,
    hazelcast: HazelcastCluster,
    maker: StreamMaker,
    *,
    catch_up_s: float,
) -> tuple[Truth, list[tuple[int, int]]]:
    """After the stream stopped: wait until every offset is committed, then check the
    stored partials, the dead-letter topic, the final snapshot and every snapshot
    seen.  Returns the truth and the origins of repeated dead letters."""
    config = cluster.config
    began = time.monotonic()
    await wait_caught_up(kafka, config.topic, f"{config.prefix}-group", catch_up_s)
    print(f"every offset committed {time.monotonic() - began:.1f} s after the stream stopped")
    truth = Truth.of(await read_topic(kafka.bootstrap, config.topic), maker.plan)
    assert set(truth.reasons()) == set(REASONS), truth.reasons()
    print(f"{len(truth.valid)} valid events, rejected {dict(truth.reasons())}")

    stored = await stored_partials(hazelcast, config.prefix, config.topic)
    problems = store_problems(truth, stored)
    assert not problems, f"{len(problems)} differences in the store:\n" + "\n".join(problems[:40])

    letters = await read_topic(kafka.bootstrap, f"{config.prefix}-dlq")
    problems, repeats = dead_letter_problems(truth, letters, config.topic)
    assert not problems, "\n".join(problems[:40])
    print(f"dead letters repeated (partition, offset): {repeats}")

    snapshot = await settled_snapshot(cluster, truth, timeout_s=60)
    problems = snapshot_problems(snapshot, truth)
    assert not problems, "final snapshot:\n" + "\n".join(problems[:40])
    problems = history_problems(recorder, config.prefix, truth)
    assert not problems, "\n".join(problems[:40])
    return truth, repeats
