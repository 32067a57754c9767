"""Window and bucket arithmetic, as pure functions of integers.

A bucket is the half-open interval [start, start + bucket_seconds) of event time.
The window evaluated at time ``at`` is [end - window_seconds, end) where ``end`` is
``at`` rounded down to a bucket boundary, so the bucket still filling is never shown
half-full.
"""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.core.types import BucketStart, EpochSeconds


def bucket_of(ts: EpochSeconds, bucket_seconds: int) -> BucketStart:
    """The bucket holding event time ``ts`` (floors, also for negative times).

    The one definition of bucket arithmetic: the map stage's fold, the window's
    end and the replay oracle all call it.  It is Python's floor division (exact:
    ``ts / bucket_seconds`` would round first and could land in the next bucket
    just below a boundary).  ``_native.c`` has the same in its ``bucket_of``,
    which ``tests/unit/test_native.py`` holds equal to this one.
    """
    return int(ts // bucket_seconds) * bucket_seconds


@dataclass(frozen=True, slots=True)
class WindowRange:
    start: BucketStart
    end: BucketStart
    bucket_seconds: int

    @property
    def seconds(self) -> int:
        return self.end - self.start

    def contains(self, bucket: BucketStart) -> bool:
        return self.start <= bucket < self.end

    def buckets(self) -> range:
        return range(self.start, self.end, self.bucket_seconds)


def window_at(at: EpochSeconds, window_seconds: int, bucket_seconds: int) -> WindowRange:
    end = bucket_of(at, bucket_seconds)
    return WindowRange(start=end - window_seconds, end=end, bucket_seconds=bucket_seconds)


def validate_geometry(window_seconds: int, bucket_seconds: int) -> None:
    """Raise ValueError unless the window is a whole, positive number of buckets."""
    if bucket_seconds <= 0:
        raise ValueError("bucket seconds must be positive")
    if window_seconds <= 0:
        raise ValueError("window seconds must be positive")
    if window_seconds % bucket_seconds:
        raise ValueError(
            f"window seconds ({window_seconds}) must be a multiple of "
            f"bucket seconds ({bucket_seconds})"
        )
