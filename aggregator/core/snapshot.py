"""Snapshot schema version 1: the JSON that replay, /api/stats and /ws/stats share.

``build_snapshot`` reads a ``RollingWindow`` and returns plain JSON-ready data.  Live
modes add fields (leader, epoch, leader_since, members, generated_at, late, future) through
``extra``; the schema's own fields never change meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aggregator.core import quantiles
from aggregator.core.events import Reject, Timeliness
from aggregator.core.types import JSONObject
from aggregator.core.window import RollingWindow

SCHEMA_VERSION = 1
_REJECT_REASONS = tuple(reason.value for reason in Reject)
_QUANTILES = (0.5, 0.9, 0.99)


def build_snapshot(
    window: RollingWindow,
    dimension_names: Sequence[str],
    top_n: int,
    *,
    rejected: Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONObject:
    """The snapshot of ``window`` as it stands; ``rejected`` overrides the window's drops."""
    span = window.range
    if span is None:
        raise RuntimeError("advance the window before building a snapshot")
    drops = window.dropped if rejected is None else rejected
    by_reason = {reason: int(drops.get(reason, 0)) for reason in _REJECT_REASONS}
    snapshot: JSONObject = {
        "schema": SCHEMA_VERSION,
        "window": {
            "start": span.start,
            "end": span.end,
            "seconds": span.seconds,
            "bucket_seconds": span.bucket_seconds,
        },
        "total": {
            "count": window.count,
            "rate_per_s": window.count / span.seconds,
            "distinct": window.distinct(),
            "value": _value_stats(window),
        },
        "by": {name: _top_keys(window, dim, top_n) for dim, name in enumerate(dimension_names)},
        "series": [{"start": b, "count": window.series.get(b, 0)} for b in span.buckets()],
        "rejected": {"count": sum(by_reason.values()), "by_reason": by_reason},
    }
    if rejected is None:
        snapshot["late"] = int(window.dropped.get(Timeliness.LATE.value, 0))
        snapshot["future"] = int(window.dropped.get(Timeliness.FUTURE.value, 0))
    if extra:
        snapshot.update(extra)
    return snapshot


def _value_stats(window: RollingWindow) -> JSONObject | None:
    if window.vcount <= 0:
        return None
    low = window.value_min()
    high = window.value_max()
    if low is None or high is None:
        raise RuntimeError("value statistics without a min or max")
    p50, p90, p99 = (min(max(q, low), high) for q in quantiles.quantiles(window.hist, _QUANTILES))
    return {
        "count": window.vcount,
        "min": low,
        "max": high,
        "mean": window.vsum / window.vcount,
        "p50": p50,
        "p90": p90,
        "p99": p99,
    }


def _top_keys(window: RollingWindow, dim: int, top_n: int) -> list[JSONObject]:
    rows: list[JSONObject] = []
    for key in window.top_keys(dim, top_n):
        hist = window.key_hist(dim, key)
        rows.append(
            {
                "key": key,
                "count": window.key_count(dim, key),
                "distinct": window.key_distinct(dim, key),
                "p99": quantiles.quantiles(hist, (0.99,))[0] if hist else None,
            }
        )
    return rows
