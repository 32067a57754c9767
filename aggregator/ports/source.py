"""A partitioned, replayable log read by a consumer group (Kafka, or the memory log)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec


class SourceRecord(msgspec.Struct, gc=False):
    """One message of the log; treat it as immutable.

    A msgspec ``Struct``, not a dataclass: a source builds one per message, and a
    Struct is built in C, about three times faster than a slotted dataclass (whose
    ``__init__`` is Python; a frozen one is three times slower again).  Not
    tracked by the garbage collector (``gc=False``: a record holds only numbers,
    bytes and tuples of them, so it can be part of no cycle): a fetch of 5,000
    records adds nothing to the collector's passes.  Nothing changes a record
    after it is built.
    """

    partition: int
    offset: int
    timestamp: float
    """When the record entered the log, epoch seconds."""
    value: bytes


class SourceUnavailable(ConnectionError):
    """The log cannot be reached right now; the caller retries."""


class SourceRefused(SourceUnavailable):
    """The log answered but refused us (a wrong password, an untrusted or expired
    certificate): trying again only helps once the credentials change, so the
    caller says so once and keeps retrying quietly."""


class RebalanceListener(Protocol):
    async def on_revoked(self, partitions: frozenset[int]) -> None:
        """Called before partitions move away: store and commit what was folded."""
        ...

    async def on_assigned(self, partitions: frozenset[int]) -> None:
        """Called when partitions arrive: load their stored state before folding."""
        ...


class EventSource(Protocol):
    @property
    def name(self) -> str:
        """The stream's name (the topic); part of every stored partial's key."""
        ...

    async def start(self, listener: RebalanceListener) -> None: ...

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        """Up to ``max_records`` records of the assigned partitions, in offset order
        per partition; may run the rebalance listener first."""
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Record, per partition, the next offset to read after a restart."""
        ...

    async def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` again from ``offset``."""
        ...

    async def committed(self, partition: int) -> int | None: ...

    async def end_offsets(self) -> dict[int, int]:
        """Per assigned partition, the offset the next appended record will get."""
        ...

    def assignment(self) -> frozenset[int]: ...

    async def stop(self) -> None:
        """Leave the group cleanly (partitions are revoked through the listener)."""
        ...


class DeadLetters(Protocol):
    async def start(self) -> None:
        """Connect (may be called again after a failure or once started);
        raise ``SourceUnavailable`` when the log cannot be reached."""
        ...

    async def send_many(self, items: Sequence[tuple[SourceRecord, str]]) -> None:
        """Keep rejected messages, unchanged, each with its reason and origin; every
        one is delivered when this returns (raise ``SourceUnavailable`` otherwise)."""
        ...
