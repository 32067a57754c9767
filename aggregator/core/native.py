"""The C extension (``_native.c``), or None where it was not built, and its API.

It holds the map stage's fold and roll-up loops (``MapFolder.fold_many`` and
``combos.add_combos`` use it when it is here) and the reducer's per-key counts
(``key_counts.add_counts``), and the per-key part of ``Partial.to_wire``,
as Python lists or as the MessagePack the Hazelcast codec stores.
``hatch_build.py`` compiles it when the package is installed and a C compiler
is there; without one, the same loops run in Python, slower.  Read ``NATIVE``
at call time: tests switch it off to compare the two.

``Native`` is the module's API as mypy sees it: every call is checked against
it.  Each function takes one small context object (what stays the same from call
to call, built once by its caller) and the state it works on; the C code reads
their fields by name, so the names below are part of the API.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from aggregator.core.partial import Agg, Partial


@dataclass(frozen=True, slots=True)
class FoldContext:
    """What ``fold_run`` needs of the folder: its decoder, rules and limits."""

    read: Callable[[bytes], Any]
    """bytes -> the decoded message (raises on a bad one)."""
    fields: tuple[str, ...]
    """The decoded message's dimension attributes, in order."""
    unknown: str
    """The key of an absent dimension."""
    epoch_seconds: Callable[[Any], float | None]
    """A time field that is not a float -> epoch seconds, or None (not a time)."""
    oldest: float
    """Seconds before its record timestamp past which an event is late."""
    newest: float
    """Seconds after its record timestamp past which an event is in the future."""
    bucket_seconds: int
    max_bytes: int
    limit: int
    """Buffered events at which ``fold_run`` stops for the buffer to be merged."""


class FoldState(Protocol):
    """What ``fold_run`` folds into: one partition's ``PartitionState``."""

    partials: dict[int, Partial]
    buffer: dict[int, dict[tuple[str, ...], list[Any]]]
    offsets: dict[int, int]
    buffered: int
    """Updated by ``fold_run``."""


class FoldRecord(Protocol):
    """What ``fold_run`` reads of a record (exactly an int, bytes and a float, or
    it leaves the record to Python)."""

    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp(self) -> float: ...


R = TypeVar("R", bound=FoldRecord)


@dataclass(frozen=True, slots=True)
class RollUpContext:
    """What ``add_combos`` needs: the aggregate type and the sketches' constants."""

    agg_type: type
    register_and_rank: Callable[[str], tuple[int, int]]
    zero_bin: int
    min_indexable: float
    inv_log_gamma: float


class Native(Protocol):
    def fold_run(
        self, context: FoldContext, state: FoldState, run: list[R], start: int, /
    ) -> tuple[int, int, int]:
        """Fold ``run[start:]`` into ``state`` until a record Python must judge (a
        drop, an unusual type) or the buffer is full: (index reached, counted,
        skipped)."""
        ...

    def add_combos(
        self, context: RollUpContext, partial: Partial, combos: dict[tuple[str, ...], Any], /
    ) -> bool:
        """``combos.add_combos`` in C; False, having changed nothing, for input it
        leaves to Python."""
        ...

    def add_counts(
        self,
        totals: dict[str, int],
        counts: dict[str, int],
        sign: int,
        bar: tuple[int, str] | None,
        risen: set[str],
        /,
    ) -> None:
        """``key_counts.add_counts_python`` in C."""
        ...

    def aggs_to_wire(self, aggs: dict[str, Agg], /) -> dict[str, list[Any]]:
        """``partial.aggs_to_wire_python`` in C."""
        ...

    def aggs_to_msgpack(self, agg_type: type[Agg], aggs: dict[str, Agg], /) -> bytes | None:
        """The MessagePack msgspec writes for ``aggs_to_wire(aggs)``, made in C from
        the Aggs' slots; None for input it leaves to Python (a value not exactly of
        ``agg_type``, a field of another type, an int beyond 64 bits)."""
        ...

    def take_counts(self, totals: dict[str, int], counts: dict[str, int], limit: int, /) -> int:
        """``key_counts.take_counts_python`` in C."""
        ...

    def bucket_of(self, ts: float, bucket_seconds: int, /) -> int | None:
        """``buckets.bucket_of`` as ``fold_run`` computes it; None where it leaves
        ``ts`` to Python (beyond what a long long holds)."""
        ...


def _load() -> Native | None:
    try:
        module = importlib.import_module("aggregator.core._native")
    except ImportError:  # not built: no compiler where the package was installed
        return None
    return cast(Native, module)


NATIVE: Native | None = _load()
