"""``PartialStore`` on a Hazelcast IMap, fenced by compare-and-set on the value.

One entry per (source, partition, bucket): key ``"<source>|<partition>|<bucket>"``,
value the encoded partial tagged with this writer's identity (codec.py).  The
client keeps the exact bytes it last read or wrote per entry and writes with
``replace_if_same(key, those bytes, new bytes)``; an entry it has never seen is
created with ``put_if_absent``.  Either fails when another writer got there first:
the bucket is returned as fenced and the entry is left as the other writer made
it.  Hazelcast has no batched compare-and-set without server-side code (an entry
processor), so a ``write`` sends one operation per partial, all at once
(``asyncio.gather``): one round-trip wave, plus a ``set_ttl`` wave for replaced
entries, because an IMap replace resets the entry to the map's configured TTL
(none by default).  With ``refresh_ttl=False`` the cluster's map config must
carry the TTL instead, and a flush is one wave.  ``stats`` counts every operation
sent (``calls``) and ``write`` calls: calls per flush.

TTLs: Hazelcast keeps entry times in whole seconds, so an entry may expire up to
one second before ``ttl_s``; irrelevant at window + grace + margin.

``load`` is one query: the key range ``[prefix, prefix_end)`` of the partition,
evaluated by every member over the partitions it owns.  It runs only when a
partition is assigned or resynced and scans keys, not values (about 70 ms for 360
entries among 8,640 on the test cluster); an index on ``__key`` would make it a
range lookup, which is not worth a cluster-wide index for so rare a call.

The client remembers the bytes of every entry it may write again: the encoded
partials of its partitions for one TTL (pruned after two TTLs without a write,
dropped by ``forget``), about the size of what the map stage already holds.

An operation whose outcome is unknown (the member died or timed out after it was
sent) leaves the bytes it tried as an alternative expectation: if they landed,
the next write still recognises the entry as its own instead of reporting a fence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hazelcast import predicate
from hazelcast.asyncio import HazelcastClient, Map
from hazelcast.errors import ClientOfflineError

from aggregator.adapters.hazelcast.codec import (
    Blob,
    decode_partial,
    encode_partial,
    parse_partial_key,
    partial_key,
    partition_prefix,
    prefix_end,
)
from aggregator.adapters.hazelcast.connection import unavailable_on_error
from aggregator.core.partial import Partial
from aggregator.ports.store import PartialKey, StoreUnavailable

_MAX_UNCERTAIN = 4
"""Unknown-outcome attempts remembered per entry (beyond that: a spurious fence,
which the map stage resolves by reloading)."""


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


@dataclass(frozen=True, slots=True)
class _Expected:
    """What this client believes an entry holds."""

    value: Blob | None
    """The bytes last read or written; None: nothing certain (only attempts)."""
    seen_at: float
    uncertain: tuple[Blob, ...] = ()
    """Writes sent whose outcome is unknown; the entry may hold any of them."""


_CREATED = "created"
_REPLACED = "replaced"


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
        self._monotonic = monotonic
        self._imap: Map[str, Blob] | None = None
        self._expected: dict[tuple[str, int], dict[int, _Expected]] = {}
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
        now = self._monotonic()
        expected = self._expected.setdefault((source, partition), {})
        partials = []
        for text, value in entries:
            key = parse_partial_key(text)
            if key is None or key.source != source or key.partition != partition:
                continue  # a source whose name contains "|" shares the prefix
            expected[key.bucket] = _Expected(value, now)
            partials.append(decode_partial(value))
        return partials

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        if not partials:
            return []
        imap = await self._map()
        expected = self._expected.setdefault((source, partition), {})
        self._prune(expected)
        calls_before = self.stats.calls
        values = [encode_partial(p, self._writer, deflate=self._deflate) for p in partials]
        outcomes = await asyncio.gather(
            *(
                self._write_one(imap, PartialKey(source, partition, p.bucket), value, expected)
                for p, value in zip(partials, values, strict=True)
            ),
            return_exceptions=True,
        )
        self.stats.writes += 1
        self.stats.entries += len(partials)
        self.stats.bytes_written += sum(map(len, values))
        self.stats.last_write_calls = self.stats.calls - calls_before
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        fenced = [p.bucket for p, written in zip(partials, outcomes, strict=True) if not written]
        self.stats.fenced += len(fenced)
        return fenced

    def forget(self, source: str, partition: int) -> None:
        self._expected.pop((source, partition), None)

    # -- one entry -------------------------------------------------------------------

    async def _write_one(
        self,
        imap: Map[str, Blob],
        key: PartialKey,
        value: Blob,
        expected: dict[int, _Expected],
    ) -> bool:
        text = partial_key(key)
        known = expected.get(key.bucket)
        try:
            with unavailable_on_error(f"cannot write {text}"):
                outcome = await self._compare_and_set(imap, text, value, known)
        except StoreUnavailable as error:
            if not isinstance(error.__cause__, ClientOfflineError):  # it may have landed
                expected[key.bucket] = _with_attempt(known, value, self._monotonic())
            raise
        except asyncio.CancelledError:
            expected[key.bucket] = _with_attempt(known, value, self._monotonic())
            raise
        if outcome is None:
            if known is not None:
                if known.value is None:
                    del expected[key.bucket]
                elif known.uncertain:
                    expected[key.bucket] = _Expected(known.value, known.seen_at)
            return False
        expected[key.bucket] = _Expected(value, self._monotonic())
        if outcome == _REPLACED and self._refresh_ttl:
            self.stats.calls += 1
            with unavailable_on_error(f"cannot set the TTL of {text}"):
                await imap.set_ttl(text, self._ttl_s)
        return True

    async def _compare_and_set(
        self, imap: Map[str, Blob], text: str, value: Blob, known: _Expected | None
    ) -> str | None:
        """_CREATED, _REPLACED, or None when another writer's value is there."""
        if known is None or known.value is None:
            self.stats.calls += 1
            existing = await imap.put_if_absent(text, value, ttl=self._ttl_s)
            if existing is None:
                return _CREATED
            if existing != value and (known is None or existing not in known.uncertain):
                return None
            candidates: tuple[Blob, ...] = (existing,)  # an earlier attempt of ours landed
        else:
            candidates = (known.value, *known.uncertain)
        for old in candidates:
            self.stats.calls += 1
            # the client annotates the key as ValueType (a slip in 5.7): it is the key
            if await imap.replace_if_same(text, old, value):  # type: ignore[arg-type]
                return _REPLACED
        return None

    def _prune(self, expected: dict[int, _Expected]) -> None:
        """Forget entries not written for two TTLs: the cluster dropped them long
        ago, and keeping their bytes would grow without bound."""
        horizon = self._monotonic() - 2 * self._ttl_s
        for bucket in [b for b, e in expected.items() if e.seen_at < horizon]:
            del expected[bucket]


def _with_attempt(known: _Expected | None, value: Blob, now: float) -> _Expected:
    """``known`` plus ``value`` as a write that may or may not have landed."""
    if known is None:
        return _Expected(None, now, (value,))
    return _Expected(known.value, known.seen_at, (*known.uncertain, value)[-_MAX_UNCERTAIN:])
