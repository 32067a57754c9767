"""Type aliases shared by the core (aliases only, no behaviour)."""

from __future__ import annotations

from typing import Any, NewType

EpochSeconds = float
"""Seconds since the Unix epoch (event time, wall-clock time)."""

BucketStart = int
"""Start of an event-time bucket, in whole epoch seconds, a multiple of bucket_seconds."""

Identity = NewType("Identity", str)
"""A leader-election participant: pod name + "_" + a per-process suffix, in a
cluster also + "_" + pod UID + "_" + container ID (core/incarnation.py)."""

Epoch = int
"""Fencing epoch: the Lease's leaseTransitions when its holder acquired it."""

JSONObject = dict[str, Any]

FlatPairs = tuple[int, ...]
"""Int pairs flattened into one tuple: key, value, key, value, ...  A tuple of
ints is left alone by the garbage collector, a dict of them is not."""
