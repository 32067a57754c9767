"""The shared store of partials, written by every pod and read by the reducer.

Entries are keyed by (source, partition, bucket).  A client remembers the version
of each entry it loaded or wrote, and writes with compare-and-set against it, so a
writer that lost its partition to another pod cannot overwrite the new owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from aggregator.core.partial import Partial


class PartialKey(NamedTuple):
    source: str
    partition: int
    bucket: int


class StoreUnavailable(ConnectionError):
    """The store cannot be reached right now; nothing was written, retry later."""


class PartialStore(Protocol):
    async def load(self, source: str, partition: int) -> list[Partial]:
        """Every stored partial of the partition; their versions become expected."""
        ...

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        """Store the partials (one batched call); return the buckets whose stored
        version was not the one this client expected (not written: fenced)."""
        ...

    def forget(self, source: str, partition: int) -> None:
        """Drop what this client expects of the partition (it was revoked)."""
        ...


class PartialFeed(Protocol):
    """What the reducer reads: every stored partial, then only what changed."""

    async def open(self) -> Iterable[tuple[PartialKey, Partial]]:
        """Start following changes; return the full current content (possibly
        decoded lazily, as it is iterated: iterate it once)."""
        ...

    async def changes(self) -> Iterable[tuple[PartialKey, Partial]]:
        """Entries written since the previous call (latest state of each; iterate once)."""
        ...

    async def close(self) -> None: ...
