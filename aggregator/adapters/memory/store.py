"""The shared partial store in memory: one ``MemoryStoreServer`` per "cluster",
one ``MemoryStoreClient`` per pod (it remembers the versions it expects), and
``MemoryFeed`` for the reducer.

Stored values are the partials' wire form, serialized, so that no pod ever shares
a mutable object with another (as with a real store).  A write adds its deltas to
the stored partials (``add_if``: one entry per bucket, the sum of every delta
written to it), compare-and-set on the entry's version.  Entries expire ``ttl_s``
after their last write, on the injected clock, and are swept out of memory at
least every ``SWEEP_EVERY_S`` while writes go on (as Hazelcast's expiry task
does), so a store written for hours holds only the last ``ttl_s`` of buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from aggregator.core.partial import Partial
from aggregator.ports.clock import Clock
from aggregator.ports.store import PartialKey, StoreUnavailable

SWEEP_EVERY_S = 1.0
"""How often (on the store's clock) writes also drop expired entries and what
clients expect of entries gone long ago."""


class MemoryStoreServer:
    def __init__(self, clock: Clock, ttl_s: float) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self.available = True
        self._entries: dict[PartialKey, tuple[int, bytes, float]] = {}
        """key -> (version, serialized partial, expires at monotonic)."""
        self._version = 0
        self._changes: list[tuple[int, PartialKey]] = []
        self._next_sweep = clock.monotonic() + SWEEP_EVERY_S
        self.writes = 0
        self.batches = 0

    def check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store is unavailable")

    def expire(self) -> None:
        now = self.clock.monotonic()
        for key in [k for k, (_, _, until) in self._entries.items() if until <= now]:
            del self._entries[key]

    @property
    def held(self) -> int:
        """Entries in memory, expired ones not yet swept included."""
        return len(self._entries)

    def _sweep_if_due(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self.expire()

    def get(self, key: PartialKey) -> tuple[int, bytes] | None:
        entry = self._entries.get(key)
        if entry is None or entry[2] <= self.clock.monotonic():
            return None
        return entry[0], entry[1]

    def keys_of(self, source: str, partition: int) -> list[PartialKey]:
        self.expire()
        return [k for k in self._entries if k.source == source and k.partition == partition]

    def all_keys(self) -> list[PartialKey]:
        self.expire()
        return list(self._entries)

    def replace_if(self, key: PartialKey, expected: int | None, value: bytes) -> int | None:
        """Compare-and-set on the version; the new version, or None when fenced."""
        self._sweep_if_due()
        current = self.get(key)
        if (current[0] if current else None) != expected:
            return None
        self._version += 1
        self._entries[key] = (self._version, value, self.clock.monotonic() + self.ttl_s)
        self._changes.append((self._version, key))
        self.writes += 1
        return self._version

    def add_if(self, key: PartialKey, expected: int | None, delta: Partial) -> int | None:
        """Add ``delta`` to the entry if its version is ``expected``; the new
        version, or None when fenced."""
        current = self.get(key)
        if (current[0] if current else None) != expected:
            return None
        if current is None:
            return self.replace_if(key, expected, _encode(delta))
        total = _decode(current[1])
        total.merge_from(delta)
        return self.replace_if(key, expected, _encode(total))

    def changed_since(self, version: int) -> tuple[list[PartialKey], int]:
        changes = self._changes
        keys = {key for v, key in changes if v > version}
        if len(changes) > 100_000:  # keep the change log bounded
            del changes[: len(changes) // 2]
        return list(keys), self._version

    @property
    def version(self) -> int:
        return self._version


def _encode(partial: Partial) -> bytes:
    return orjson.dumps(partial.to_wire())


def _decode(value: bytes) -> Partial:
    return Partial.from_wire(orjson.loads(value))


class MemoryStoreClient:
    """Implements ``PartialStore`` for one pod."""

    def __init__(self, server: MemoryStoreServer) -> None:
        self._server = server
        self._expected: dict[PartialKey, tuple[int, float]] = {}
        """key -> (version, monotonic time this client last loaded or wrote it)."""
        self._next_prune = server.clock.monotonic() + SWEEP_EVERY_S
        self.available = True
        self.lose_replies = 0
        """Fault injection: the next N writes are stored, then raise
        ``StoreUnavailable`` as if the reply had been lost on the way back."""

    @property
    def expected(self) -> int:
        """Entries whose version this client remembers."""
        return len(self._expected)

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("this pod cannot reach the memory store")
        self._server.check()

    def _prune_if_due(self) -> None:
        """Forget entries not written for two TTLs (the store dropped them long
        ago), as the Hazelcast adapter does."""
        now = self._server.clock.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + SWEEP_EVERY_S
        horizon = now - 2 * self._server.ttl_s
        for key in [k for k, (_, seen) in self._expected.items() if seen < horizon]:
            del self._expected[key]

    async def load(self, source: str, partition: int) -> list[Partial]:
        self._check()
        partials = []
        now = self._server.clock.monotonic()
        for key in self._server.keys_of(source, partition):
            entry = self._server.get(key)
            if entry is not None:
                self._expected[key] = (entry[0], now)
                partials.append(_decode(entry[1]))
        return partials

    async def write(self, source: str, partition: int, partials: Sequence[Partial]) -> list[int]:
        self._check()
        self._server.batches += 1
        self._prune_if_due()
        fenced = []
        now = self._server.clock.monotonic()
        for partial in partials:
            key = PartialKey(source, partition, partial.bucket)
            known = self._expected.get(key)
            version = self._server.add_if(key, None if known is None else known[0], partial)
            if version is None:
                fenced.append(partial.bucket)
            else:
                self._expected[key] = (version, now)
        if self.lose_replies:
            self.lose_replies -= 1
            raise StoreUnavailable("the memory store's reply was lost (it stored the write)")
        return fenced

    def forget(self, source: str, partition: int) -> None:
        for key in [k for k in self._expected if k.source == source and k.partition == partition]:
            del self._expected[key]


class MemoryFeed:
    """Implements ``PartialFeed``: a full read, then changes by version."""

    def __init__(self, server: MemoryStoreServer) -> None:
        self._server = server
        self._seen = 0
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("this pod cannot reach the memory store")
        self._server.check()

    async def open(self) -> list[tuple[PartialKey, Partial]]:
        self._check()
        self._seen = self._server.version
        return self._read(self._server.all_keys())

    async def changes(self) -> list[tuple[PartialKey, Partial]]:
        self._check()
        keys, self._seen = self._server.changed_since(self._seen)
        return self._read(keys)

    async def close(self) -> None:
        return None

    def _read(self, keys: list[PartialKey]) -> list[tuple[PartialKey, Partial]]:
        out = []
        for key in keys:
            entry = self._server.get(key)
            if entry is not None:
                out.append((key, _decode(entry[1])))
        return out
