"""The shared store of partials, written by every pod and read by the reducer.

The map stage hands the store deltas: per (source, partition, bucket), what it
folded since its last successful write, with the bucket's highest offset folded
so far.  The store adds them up; ``load`` gives back each bucket's sum (its full
partial, with the highest offset of any delta), which is all a new owner needs to
skip what is already counted.  A client remembers what it loaded or wrote of each
bucket and writes with compare-and-set against it, so a writer that lost its
partition to another pod cannot add to what the new owner writes.

Adding is not idempotent: a ``write`` that raised may have stored some, all or
none of its deltas, so the caller must ``load`` the partition again (and re-read
its source from the committed offset) before it writes that partition again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from aggregator.core.partial import Partial


class PartialKey(NamedTuple):
    source: str
    partition: int
    bucket: int
    segment: int = 0
    """A store may keep a bucket as several entries that add up (Hazelcast's
    segments, numbered from 1); 0 for the bucket's only or first entry."""


class StoreUnavailable(ConnectionError):
    """The store cannot be reached right now, or a call's outcome is unknown: a
    ``load`` returned nothing (retry later); a ``write`` may have added some of
    its deltas (reload the partition before writing it again)."""


class PartialStore(Protocol):
    async def load(self, source: str, partition: int) -> list[Partial]:
        """Every stored bucket of the partition, as one full partial each (the sum
        of what was written to it, with the highest offset); what is stored now
        becomes what this client expects."""
        ...

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        """Add the deltas (one per bucket, each with the bucket's new highest
        offset) to what is stored, in one batched call; return the buckets that
        another writer wrote since this client last loaded or wrote them (not
        added: fenced).  Raises ``StoreUnavailable`` when the outcome is unknown:
        reload the partition before writing it again."""
        ...

    def forget(self, source: str, partition: int) -> None:
        """Drop what this client expects of the partition (it was revoked)."""
        ...


class PartialFeed(Protocol):
    """What the reducer reads: every stored partial, then only what changed."""

    async def open(self) -> Iterable[tuple[PartialKey, Partial]]:
        """Start following changes; return the full current content (possibly
        decoded lazily, as it is iterated: iterate it once).  A bucket may come as
        several entries (keys differing in ``segment``): its partial is their sum."""
        ...

    async def changes(self) -> Iterable[tuple[PartialKey, Partial]]:
        """Entries written since the previous call (latest state of each; iterate
        once).  An entry's state replaces its previous one; distinct entries add."""
        ...

    async def close(self) -> None: ...
