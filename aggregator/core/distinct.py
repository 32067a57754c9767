"""Distinct counting: HyperLogLog registers, and registers that slide with a window.

Each distinct value hashes (xxh3, 64 bits, the same in every process) to a register
(the top ``PRECISION`` bits) and a rank (leading zeros of the rest, plus one).  A
sketch keeps the highest rank per register; union is a per-register max.  The
standard error of the estimate is 1.04 / sqrt(2**PRECISION) = 1.63 % at precision 12;
below 2.5 * 2**PRECISION, linear counting on empty registers is used and is tighter.

``SlidingMax`` keeps, for values tagged with a time, exactly the pairs that can
still be the maximum of some window [start, +inf): adding is idempotent, so a partial
that grows may be folded again, and expiring a bucket costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import xxhash

PRECISION = 12
REGISTERS = 1 << PRECISION
_REST_BITS = 64 - PRECISION
_REST_MASK = (1 << _REST_BITS) - 1
_ALPHA = 0.7213 / (1.0 + 1.079 / REGISTERS)
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)

Registers = dict[int, int]
_hash = xxhash.xxh3_64_intdigest


def register_and_rank(value: str) -> tuple[int, int]:
    h = _hash(value.encode())
    return h >> _REST_BITS, _REST_BITS - (h & _REST_MASK).bit_length() + 1


def union_into(target: Registers, source: Mapping[int, int]) -> None:
    for register, rank in source.items():
        if rank > target.get(register, 0):
            target[register] = rank


def estimate(ranks: Iterable[int]) -> int:
    """Cardinality from the ranks of the non-empty registers."""
    filled = 0
    harmonic = 0.0
    for rank in ranks:
        filled += 1
        harmonic += 2.0**-rank
    if filled == 0:
        return 0
    empty = REGISTERS - filled
    raw = _ALPHA * REGISTERS * REGISTERS / (harmonic + empty)
    if raw <= 2.5 * REGISTERS and empty:
        return round(REGISTERS * math.log(REGISTERS / empty))
    return round(raw)


class SlidingMax:
    """Max of (time, value) pairs restricted to time >= start, for any start.

    Pairs are kept in ascending time with strictly descending values (a pair is
    dropped once a later-or-equal time has a greater-or-equal value), so the answer
    for a start is the value of the first pair at or after it.
    """

    __slots__ = ("_pairs",)

    def __init__(self) -> None:
        self._pairs: list[tuple[int, float]] = []

    def add(self, time: int, value: float) -> None:
        pairs = self._pairs
        # Dominated: some pair no older with a value at least as large.
        for t, v in reversed(pairs):
            if t < time:
                break
            if v >= value:
                return
        kept = [(t, v) for t, v in pairs if not (t <= time and v <= value)]
        kept.append((time, value))
        kept.sort(key=lambda pair: pair[0])
        self._pairs = kept

    def max_since(self, start: int) -> float | None:
        pairs = self._pairs
        while pairs and pairs[0][0] < start:
            pairs.pop(0)
        return pairs[0][1] if pairs else None

    def __bool__(self) -> bool:
        return bool(self._pairs)


class SlidingRegisters:
    """HyperLogLog registers whose contributions expire with the window."""

    __slots__ = ("_registers",)

    def __init__(self) -> None:
        self._registers: dict[int, SlidingMax] = {}

    def add(self, time: int, registers: Mapping[int, int]) -> None:
        own = self._registers
        for register, rank in registers.items():
            slot = own.get(register)
            if slot is None:
                slot = own[register] = SlidingMax()
            slot.add(time, rank)

    def estimate_since(self, start: int) -> int:
        ranks: list[int] = []
        expired: list[int] = []
        for register, slot in self._registers.items():
            rank = slot.max_since(start)
            if rank is None:
                expired.append(register)
            else:
                ranks.append(int(rank))
        for register in expired:
            del self._registers[register]
        return estimate(ranks)
