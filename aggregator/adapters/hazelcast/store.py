"""``PartialStore`` on a Hazelcast IMap, fenced by compare-and-set: seal, then append.

The map stage writes deltas (what each bucket gained since its previous write).
Each bucket is stored as:

* its base entry, key ``"<source>|<partition>|<bucket>"``: while small, the
  bucket's full partial (the sum of every delta so far), tagged with this
  writer's identity (codec.py).  A write merges the delta into the full partial
  this client keeps of the entry (decoded, beside the exact bytes it last read
  or wrote) and replaces the entry with ``replace_if_same(key, those bytes, new
  bytes)``; an entry it has never seen is created with ``put_if_absent``.
* once the merged full encoding would exceed ``SEAL_BYTES``, that write replaces
  the base (compare-and-set still) with the full partial marked sealed; from then
  on each write of the bucket adds the delta as a new immutable segment entry
  ``"<source>|<partition>|<bucket>#<n>"`` (n = 1, 2, ...), created with
  ``put_if_absent`` and its TTL in one call.

Why: rewriting the whole partial on every flush (old bytes and new on the wire,
every 0.5 s) costs what the partial holds, not what arrived, so at a million keys
the map stage went quadratic (2.3 MiB per partial written, 26 MiB per flush).
Segments make a flush cost its delta.  But a bucket of many small segments costs
the reducer an entry per segment and a load a merge per segment, so buckets stay
whole while they are small: at low cardinality (a 200-app partial is about
58 KiB) nothing ever seals and the entries, calls and reads are what they were
before segments.

Fencing: either compare-and-set fails when another writer got there first, and
a segment that already exists means another writer added it; in every case the
bucket is returned as fenced and the entry is left as the other writer made it.
Sealing is a compare-and-set too, so a writer whose view of the bucket is
unsealed is fenced by the seal.  Hazelcast has no batched compare-and-set
without server-side code (an entry processor), so a ``write`` sends one
operation per bucket, all at once (``asyncio.gather``): one round-trip wave,
plus a ``set_ttl`` wave for replaced base entries, because an IMap replace
resets the entry to the map's configured TTL (none by default).  With
``refresh_ttl=False`` the cluster's map config must carry the TTL instead.
``stats`` counts every operation sent (``calls``) and ``write`` calls: calls
per flush.

TTLs: Hazelcast keeps entry times in whole seconds, so an entry may expire up to
one second before ``ttl_s``; irrelevant at window + grace + margin.  A sealed
base is not written again, so it may expire before the bucket's last segments;
the bucket has left the window by then (its TTL runs from its last write, at
least the window and the grace after the bucket's start), and a load that finds
segments without a base counts the bucket as sealed.  The write that seals a
base replaces it, so its ``set_ttl`` follows as for any replace; should that be
lost (the write raised), the first append after the reload sets it again, or the
base would keep the map's TTL (none by default) for ever.

``load`` is one query: the key range ``[prefix, prefix_end)`` of the partition
(base entries and segments alike), evaluated by every member over the
partitions it owns; it merges each bucket's entries into its full partial and
learns, per bucket, whether it is sealed and its next segment number.  It runs
only when a partition is assigned or resynced and scans keys, not values (about
70 ms for 360 entries among 8,640 on the test cluster); an index on ``__key``
would make it a range lookup, which is not worth a cluster-wide index for so
rare a call.

The client remembers, per bucket it may write again, the base entry's bytes,
its decoded full partial while unsealed (at most ``SEAL_BYTES`` encoded), or
the next segment number once sealed, for one TTL (pruned after two TTLs without
a write, dropped by ``forget``).

A delta is not idempotent: a write whose outcome is unknown (the member died or
timed out after it was sent, or the call was cancelled) leaves the bucket
unknown to this client, which forgets what it expected of it.  The caller
reloads the partition before writing it again (the port's contract); a write
without that reload is fenced rather than risk adding a delta twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hazelcast import predicate
from hazelcast.asyncio import HazelcastClient, Map

from aggregator.adapters.hazelcast.codec import (
    Blob,
    decode_partial,
    encode_partial,
    is_sealed,
    parse_partial_key,
    partial_key,
    partition_prefix,
    prefix_end,
    sealed,
)
from aggregator.adapters.hazelcast.connection import unavailable_on_error
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialKey

SEAL_BYTES = 256 * 1024
"""A bucket whose full partial would encode larger than this is sealed, and its
later deltas are appended as segments.  Far above a 200-app partial (about
58 KiB): the low-cardinality layout never seals."""


@dataclass
class StoreStats:
    calls: int = 0
    """Hazelcast operations sent (every put_if_absent, replace_if_same, set_ttl, query)."""
    writes: int = 0
    """``write`` calls that had something to store."""
    entries: int = 0
    """Partials offered to ``write``."""
    fenced: int = 0
    last_write_calls: int = 0
    bytes_written: int = 0
    sealed: int = 0
    """Base entries this client sealed."""
    segments: int = 0
    """Segment entries this client created."""


@dataclass(slots=True)
class _Bucket:
    """What this client believes one bucket holds."""

    value: Blob | None
    """The base entry's bytes as last read or written; None: no base (only segments)."""
    seen_at: float
    full: Partial | None
    """The base's decoded full partial while unsealed; None once sealed."""
    next_segment: int = 0
    """0 while unsealed; once sealed, the number of the next segment to add."""
    base_ttl_unsure: bool = False
    """A sealed base found by ``load``: the write that sealed it may have lost its
    ``set_ttl``, so the next append sets it (a sealed base is never written again)."""


class HazelcastStore:
    """Implements ``PartialStore`` for one pod (one writer identity)."""

    def __init__(
        self,
        client: HazelcastClient,
        *,
        writer: str,
        ttl_s: float,
        map_name: str = "partials",
        deflate: bool = False,
        refresh_ttl: bool = True,
        seal_bytes: int = SEAL_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the partials' TTL must be positive")
        self._client = client
        self._writer = writer
        self._ttl_s = ttl_s
        self._map_name = map_name
        self._deflate = deflate
        self._refresh_ttl = refresh_ttl
        self._seal_bytes = seal_bytes
        self._monotonic = monotonic
        self._imap: Map[str, Blob] | None = None
        self._expected: dict[tuple[str, int], dict[int, _Bucket]] = {}
        self.stats = StoreStats()

    async def _map(self) -> Map[str, Blob]:
        if self._imap is None:
            with unavailable_on_error(f"cannot open map {self._map_name}"):
                self._imap = await self._client.get_map(self._map_name)
        return self._imap

    # -- PartialStore ------------------------------------------------------------

    async def load(self, source: str, partition: int) -> list[Partial]:
        imap = await self._map()
        prefix = partition_prefix(source, partition)
        query = predicate.and_(
            predicate.greater_or_equal("__key", prefix),
            predicate.less("__key", prefix_end(prefix)),
        )
        self.stats.calls += 1
        with unavailable_on_error(f"cannot load {source} partition {partition}"):
            entries: list[tuple[str, Blob]] = await imap.entry_set(query)
        bases: dict[int, Blob] = {}
        segments: dict[int, list[tuple[int, Blob]]] = {}
        for text, value in entries:
            key = parse_partial_key(text)
            if key is None or key.source != source or key.partition != partition:
                continue  # a source whose name contains "|" shares the prefix
            if key.segment:
                segments.setdefault(key.bucket, []).append((key.segment, value))
            else:
                bases[key.bucket] = value
        now = self._monotonic()
        expected = self._expected[(source, partition)] = {}
        partials = []
        for bucket in sorted(bases.keys() | segments.keys()):
            base = bases.get(bucket)
            added = sorted(segments.get(bucket, ()))
            parts = ([] if base is None else [decode_partial(base)]) + [
                decode_partial(value) for _, value in added
            ]
            total = parts[0]
            for part in parts[1:]:
                total.merge_from(part)
            if added or base is None or is_sealed(base):  # segments without a base: sealed
                next_segment = added[-1][0] + 1 if added else 1
                expected[bucket] = _Bucket(base, now, None, next_segment, base is not None)
            else:
                expected[bucket] = _Bucket(base, now, total.copy())
            partials.append(total)
        return partials

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        if not partials:
            return []
        imap = await self._map()
        expected = self._expected.setdefault((source, partition), {})
        self._prune(expected)
        calls_before = self.stats.calls
        outcomes = await asyncio.gather(
            *(
                self._write_one(imap, PartialKey(source, partition, delta.bucket), delta, expected)
                for delta in partials
            ),
            return_exceptions=True,
        )
        self.stats.writes += 1
        self.stats.entries += len(partials)
        self.stats.last_write_calls = self.stats.calls - calls_before
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        fenced = [p.bucket for p, written in zip(partials, outcomes, strict=True) if not written]
        self.stats.fenced += len(fenced)
        return fenced

    def forget(self, source: str, partition: int) -> None:
        self._expected.pop((source, partition), None)

    # -- one bucket ------------------------------------------------------------------

    async def _write_one(
        self, imap: Map[str, Blob], key: PartialKey, delta: Partial, expected: dict[int, _Bucket]
    ) -> bool:
        """Add ``delta`` to the bucket; False when fenced.  On a fence or an error
        the bucket's expectation is dropped: its state is the other writer's, or
        unknown, and the caller reloads it."""
        known = expected.pop(key.bucket, None)
        text = partial_key(key)
        with unavailable_on_error(f"cannot write {text}"):
            if known is not None and known.full is None:
                written = await self._append(imap, key, delta, known)
            else:
                written = await self._replace(imap, text, delta, known)
        if written is not None:
            expected[key.bucket] = written
        return written is not None

    async def _append(
        self, imap: Map[str, Blob], key: PartialKey, delta: Partial, known: _Bucket
    ) -> _Bucket | None:
        """A sealed bucket: the delta as its next segment, unless one is there."""
        text = partial_key(key._replace(segment=known.next_segment))
        value = encode_partial(delta, self._writer, deflate=self._deflate)
        self.stats.calls += 1
        self.stats.bytes_written += len(value)
        if await imap.put_if_absent(text, value, ttl=self._ttl_s) is not None:
            return None
        self.stats.segments += 1
        if known.base_ttl_unsure and self._refresh_ttl:
            self.stats.calls += 1
            await imap.set_ttl(partial_key(key), self._ttl_s)
        return _Bucket(known.value, self._monotonic(), None, known.next_segment + 1)

    async def _replace(
        self, imap: Map[str, Blob], text: str, delta: Partial, known: _Bucket | None
    ) -> _Bucket | None:
        """An unsealed bucket (or one never seen): the base entry replaced by the
        merged full partial, sealed if it grew past ``SEAL_BYTES``."""
        if known is None:
            full = delta  # copied below if kept: the caller's object
        else:
            assert known.full is not None
            full = known.full  # this client's own copy: dropped if the write fails
            full.merge_from(delta)
        value = encode_partial(full, self._writer, deflate=self._deflate)
        seal = len(value) > self._seal_bytes
        if seal:
            value = sealed(value)
        self.stats.calls += 1
        self.stats.bytes_written += len(value)
        if known is None:
            if await imap.put_if_absent(text, value, ttl=self._ttl_s) is not None:
                return None
        else:
            assert known.value is not None  # an unsealed bucket has its base
            # the client annotates the key as ValueType (a slip in 5.7): it is the key
            if not await imap.replace_if_same(text, known.value, value):  # type: ignore[arg-type]
                return None
            if self._refresh_ttl:
                self.stats.calls += 1
                await imap.set_ttl(text, self._ttl_s)
        if seal:
            self.stats.sealed += 1
            return _Bucket(value, self._monotonic(), None, 1)
        return _Bucket(value, self._monotonic(), full if known else full.copy())

    def _prune(self, expected: dict[int, _Bucket]) -> None:
        """Forget buckets not written for two TTLs: the cluster dropped them long
        ago, and keeping their bytes would grow without bound."""
        horizon = self._monotonic() - 2 * self._ttl_s
        for bucket in [b for b, e in expected.items() if e.seen_at < horizon]:
            del expected[bucket]
