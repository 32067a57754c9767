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

import heapq
import math
from collections.abc import Iterable, Mapping
from operator import itemgetter

import xxhash

from aggregator.core.types import FlatPairs

PRECISION = 12
REGISTERS = 1 << PRECISION
_REST_BITS = 64 - PRECISION
_REST_MASK = (1 << _REST_BITS) - 1
_ALPHA = 0.7213 / (1.0 + 1.079 / REGISTERS)

Registers = dict[int, int]
_hash = xxhash.xxh3_64_intdigest
_time_of = itemgetter(0)


def register_and_rank(value: str) -> tuple[int, int]:
    h = _hash(value.encode())
    return h >> _REST_BITS, _REST_BITS - (h & _REST_MASK).bit_length() + 1


def registers_and_ranks(values: Iterable[str]) -> dict[str, tuple[int, int]]:
    """``register_and_rank`` of each value, keyed by value (pass distinct values)."""
    return {value: register_and_rank(value) for value in values}


def raise_into(target: Registers, pairs: Iterable[tuple[int, int]]) -> None:
    """Fold (register, rank) pairs into ``target``, keeping the highest rank."""
    for register, rank in pairs:
        if rank > target.get(register, 0):
            target[register] = rank


def union_into(target: Registers, source: Mapping[int, int]) -> None:
    for register, rank in source.items():
        if rank > target.get(register, 0):
            target[register] = rank


def estimate(ranks: Iterable[int]) -> int:
    """Cardinality from the ranks of the non-empty registers."""
    filled = 0
    scaled = 0
    for rank in ranks:
        filled += 1
        scaled += 1 << (_REST_BITS + 1 - rank)
    return estimate_from(filled, scaled)


def estimate_from(filled: int, scaled_harmonic: int) -> int:
    """Cardinality from the count of non-empty registers and the exact sum of
    2**-rank over them, scaled by 2**(REST_BITS + 1) to stay an integer."""
    if filled == 0:
        return 0
    empty = REGISTERS - filled
    harmonic = scaled_harmonic / (1 << (_REST_BITS + 1))
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

    def __init__(self, pairs: list[tuple[int, float]] | None = None) -> None:
        """Empty, or holding ``pairs`` that already keep the order described above."""
        self._pairs: list[tuple[int, float]] = [] if pairs is None else pairs

    def add(self, time: int, value: float) -> None:
        pairs = self._pairs
        if not pairs or time >= pairs[-1][0]:
            # The usual case, the newest bucket: drop what it dominates from the end.
            while pairs and pairs[-1][1] <= value:
                pairs.pop()
            if not pairs or pairs[-1][0] < time:
                pairs.append((time, value))
            return
        # An older bucket: dominated if some pair no older holds at least as much.
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


def _pairs(registers: Mapping[int, int] | FlatPairs) -> Iterable[tuple[int, int]]:
    if isinstance(registers, tuple):
        flat = iter(registers)
        return zip(flat, flat, strict=False)  # consecutive items: even length
    return registers.items()


Stack = tuple[int, ...]
"""One register's ``SlidingMax`` pairs, flat: time, rank, time, rank, ... (times
ascending, ranks strictly descending).  A tuple of ints: the garbage collector
stops tracking it, so a sketch costs a collection pass a few objects, not one
per register."""


def pushed(stack: Stack, time: int, rank: int) -> Stack:
    """``stack`` with (time, rank) added, as ``SlidingMax.add`` adds a pair."""
    end = len(stack)
    if time >= stack[end - 2]:
        # The usual case, the newest time: drop what it dominates from the end.
        while end and stack[end - 1] <= rank:
            end -= 2
        if end and stack[end - 2] >= time:
            return stack  # a pair at this time holds more
        return (*stack[:end], time, rank)
    # An older time: dominated if some pair no older holds at least as much.
    pairs = list(zip(stack[::2], stack[1::2], strict=True))
    for t, r in reversed(pairs):
        if t < time:
            break
        if r >= rank:
            return stack
    kept = [(t, r) for t, r in pairs if not (t <= time and r <= rank)]
    kept.append((time, rank))
    kept.sort()
    return tuple(number for pair in kept for number in pair)


class SlidingRegisters:
    """HyperLogLog registers whose contributions expire with the window.

    The current rank of every register (for the last start asked about) and the
    estimator's sums are kept up to date, and a heap orders registers by when
    their current rank expires: a query recomputes only the registers whose rank
    just expired, so its cost follows what changed, not the register count.
    """

    __slots__ = ("_current", "_expiry", "_filled", "_scaled", "_scheduled", "_stacks", "_start")

    def __init__(self) -> None:
        self._stacks: dict[int, Stack] = {}
        self._current: dict[int, int] = {}
        self._filled = 0
        self._scaled = 0
        self._expiry: list[tuple[int, int]] = []
        self._scheduled: dict[int, int] = {}
        self._start: int | None = None

    @classmethod
    def built(
        cls, contributions: Iterable[tuple[int, Mapping[int, int] | FlatPairs]], start: int
    ) -> SlidingRegisters:
        """The sketch of (time, registers) contributions, all at or after ``start``,
        as ``estimate_since(start)`` would leave it; much cheaper than adding them
        one by one.  Scanning from the newest time, a rank is kept exactly when it
        beats every rank at a later or equal time, which is ``SlidingMax``'s order."""
        kept: dict[int, list[int]] = {}  # newest first while building: rank, time, ...
        best: dict[int, int] = {}
        best_of = best.get
        for time, registers in sorted(contributions, key=_time_of, reverse=True):
            for register, rank in _pairs(registers):
                if rank > best_of(register, 0):
                    best[register] = rank
                    found = kept.get(register)
                    if found is None:
                        kept[register] = [rank, time]
                    elif found[-1] == time:
                        found[-2] = rank
                    else:
                        found += (rank, time)
        sketch = cls()
        sketch._start = start
        sketch._current = best
        sketch._filled = len(best)
        sketch._scaled = sum(1 << (_REST_BITS + 1 - rank) for rank in best.values())
        stacks = sketch._stacks
        scheduled = sketch._scheduled
        for register, found in kept.items():
            found.reverse()
            stacks[register] = tuple(found)
            scheduled[register] = found[0]
        sketch._expiry = [(time, register) for register, time in scheduled.items()]
        heapq.heapify(sketch._expiry)
        return sketch

    def add(self, time: int, registers: Mapping[int, int] | FlatPairs) -> None:
        stacks = self._stacks
        current = self._current
        start = self._start
        for register, rank in _pairs(registers):
            stack = stacks.get(register)
            stacks[register] = (time, rank) if stack is None else pushed(stack, time, rank)
            # A rank no higher than the current one leaves the current rank as it
            # is; if it replaced the pair that holds it (an equal rank, later), the
            # expiry scheduled for the older pair recomputes and reschedules it.
            if (start is None or time >= start) and rank > current.get(register, 0):
                self._refresh(register)

    def estimate_since(self, start: int) -> int:
        if self._start is None or start < self._start:
            self._start = start
            for register in list(self._stacks):
                self._refresh(register)
        elif start > self._start:
            self._start = start
            expiry = self._expiry
            while expiry and expiry[0][0] < start:
                due, register = heapq.heappop(expiry)
                if self._scheduled.get(register) == due:
                    del self._scheduled[register]
                if register in self._stacks:
                    self._refresh(register)
        return estimate_from(self._filled, self._scaled)

    def _refresh(self, register: int) -> None:
        """Recompute one register's rank for the current start (dropping pairs
        before it), and schedule the next moment it can change (when its oldest
        surviving pair expires)."""
        stack = self._stacks[register]
        start = self._start
        if start is not None and stack[0] < start:
            at = 2
            while at < len(stack) and stack[at] < start:
                at += 2
            stack = self._stacks[register] = stack[at:]
        old = self._current.get(register)
        new = stack[1] if stack else None
        if new != old:
            if old is not None:
                self._filled -= 1
                self._scaled -= 1 << (_REST_BITS + 1 - old)
            if new is not None:
                self._filled += 1
                self._scaled += 1 << (_REST_BITS + 1 - new)
                self._current[register] = new
            else:
                del self._current[register]
        if new is None:
            del self._stacks[register]
            self._scheduled.pop(register, None)
            return
        first = stack[0]
        if self._scheduled.get(register) != first:
            self._scheduled[register] = first
            heapq.heappush(self._expiry, (first, register))
