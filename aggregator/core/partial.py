"""Partial aggregates: what one source partition saw in one event-time bucket.

A ``Partial`` holds an ``Agg`` for the total and one per key of each dimension,
plus counts of dropped messages by reason.  ``merge_into`` is associative and
commutative with the empty partial as identity; it is how pods' partials combine.
The map stage stores a partial together with the highest source offset folded
into it, which is what makes replays after a crash idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aggregator.core import distinct, native, quantiles

_INF = float("inf")


class Agg:
    """Count, value statistics, value histogram and distinct registers of one key."""

    __slots__ = ("count", "hist", "regs", "vcount", "vmax", "vmin", "vsum")

    def __init__(self) -> None:
        self.count = 0
        self.vcount = 0
        self.vsum = 0.0
        self.vmin = _INF
        self.vmax = -_INF
        self.hist: quantiles.Histogram = {}
        self.regs: distinct.Registers = {}

    def merge_from(self, other: Agg) -> None:
        self.count += other.count
        self.vcount += other.vcount
        self.vsum += other.vsum
        if other.vmin < self.vmin:
            self.vmin = other.vmin
        if other.vmax > self.vmax:
            self.vmax = other.vmax
        quantiles.add_into(self.hist, other.hist)
        distinct.union_into(self.regs, other.regs)

    def copy(self) -> Agg:
        twin = Agg()
        twin.merge_from(self)
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Agg):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in Agg.__slots__)

    def __repr__(self) -> str:
        return f"Agg(count={self.count}, vcount={self.vcount}, vsum={self.vsum})"

    def to_wire(self) -> list[Any]:
        return [
            self.count,
            self.vcount,
            self.vsum,
            self.vmin if self.vcount else None,
            self.vmax if self.vcount else None,
            _flatten(self.hist),
            _flatten(self.regs),
        ]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Agg:
        agg = cls()
        agg.count, agg.vcount, agg.vsum = int(wire[0]), int(wire[1]), float(wire[2])
        if agg.vcount:
            agg.vmin, agg.vmax = float(wire[3]), float(wire[4])
        agg.hist = _unflatten(wire[5])
        agg.regs = _unflatten(wire[6])
        return agg


class Partial:
    """Aggregates of one (source partition, bucket); ``offset`` is the highest folded."""

    __slots__ = ("bucket", "by", "dropped", "offset", "total")

    def __init__(self, bucket: int, dimensions: int, offset: int = -1) -> None:
        self.bucket = bucket
        self.offset = offset
        self.total = Agg()
        self.by: tuple[dict[str, Agg], ...] = tuple({} for _ in range(dimensions))
        self.dropped: dict[str, int] = {}

    @property
    def dimensions(self) -> int:
        return len(self.by)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def merge_from(self, other: Partial) -> None:
        if other.dimensions != self.dimensions:
            raise ValueError("cannot merge partials of different dimension counts")
        self.offset = max(self.offset, other.offset)
        self.total.merge_from(other.total)
        for mine, theirs in zip(self.by, other.by, strict=True):
            for key, agg in theirs.items():
                own = mine.get(key)
                if own is None:
                    mine[key] = agg.copy()
                else:
                    own.merge_from(agg)
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def copy(self) -> Partial:
        twin = Partial(self.bucket, self.dimensions, self.offset)
        twin.merge_from(self)
        twin.offset = self.offset
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partial):
            return NotImplemented
        return (
            self.bucket == other.bucket
            and self.offset == other.offset
            and self.total == other.total
            and self.by == other.by
            and self.dropped == other.dropped
        )

    def __repr__(self) -> str:
        return (
            f"Partial(bucket={self.bucket}, offset={self.offset}, count={self.total.count}, "
            f"dropped={self.dropped})"
        )

    def to_wire(
        self, keys_to_wire: Callable[[dict[str, Agg]], object] | None = None
    ) -> dict[str, Any]:
        """The partial as lists, dicts and numbers; each dimension's keys as
        ``keys_to_wire`` makes them (``aggs_to_wire`` unless given: the Hazelcast
        codec gives them already encoded)."""
        each = aggs_to_wire if keys_to_wire is None else keys_to_wire
        return {
            "b": self.bucket,
            "o": self.offset,
            "t": self.total.to_wire(),
            "k": [each(keys) for keys in self.by],
            "d": self.dropped,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Partial:
        partial = cls(int(wire["b"]), len(wire["k"]), int(wire["o"]))
        partial.total = Agg.from_wire(wire["t"])
        partial.by = tuple(
            {str(key): Agg.from_wire(agg) for key, agg in keys.items()} for keys in wire["k"]
        )
        partial.dropped = {str(reason): int(count) for reason, count in wire["d"].items()}
        return partial


def aggs_to_wire(aggs: dict[str, Agg]) -> dict[str, list[Any]]:
    """``{key: agg.to_wire()}``: every flush encodes every key of a partial, so at
    high cardinality this is most of the map stage's encoding; the C extension
    does it when built (``_native.c``'s ``aggs_to_wire``, held equal to this
    Python twin by tests/unit/test_partial_wire.py)."""
    compiled = native.NATIVE
    if compiled is not None and type(aggs) is dict:
        return compiled.aggs_to_wire(aggs)
    return aggs_to_wire_python(aggs)


def aggs_to_wire_python(aggs: Mapping[str, Agg]) -> dict[str, list[Any]]:
    return {key: agg.to_wire() for key, agg in aggs.items()}


def aggs_to_msgpack(aggs: dict[str, Agg]) -> bytes | None:
    """The MessagePack that msgspec's encoder writes for ``aggs_to_wire(aggs)``,
    byte for byte, written by the C extension straight from the Aggs: at a million
    keys, building the lists only for msgspec to walk them once was most of the
    encoding.  None without the extension, or for input it leaves to Python (an
    unusual type, an int msgspec refuses): encode ``aggs_to_wire(aggs)`` then.
    tests/unit/test_partial_wire.py holds the two encodings equal."""
    compiled = native.NATIVE
    if compiled is None or type(aggs) is not dict:
        return None
    return compiled.aggs_to_msgpack(Agg, aggs)


def merged(partials: list[Partial], bucket: int, dimensions: int) -> Partial:
    """The merge of any number of partials (the empty partial for none)."""
    result = Partial(bucket, dimensions)
    for partial in partials:
        result.merge_from(partial)
    return result


def _flatten(mapping: Mapping[int, int]) -> list[int]:
    flat: list[int] = []
    for key, value in mapping.items():
        flat.append(key)
        flat.append(value)
    return flat


def _unflatten(flat: list[int]) -> dict[int, int]:
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
