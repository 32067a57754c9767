"""Rebalance callbacks, run only while the caller waits inside ``fetch``.

aiokafka calls its listener from a background task whenever the group rebalances.
The map stage is written against the port's promise that the listener runs inside
``fetch`` (as the memory log does), never while the stage itself is halfway
through a flush of the same partitions.  ``CallbackGate`` keeps that promise: a
callback waits until the caller is blocked in ``fetch`` and ``fetch`` does not
return while a callback runs.  aiokafka's rebalance is eager: every rebalance
revokes the whole assignment (flush + commit all) and then assigns the new one
(load all); the listener sees exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import ConsumerRebalanceListener

from aggregator.ports.source import RebalanceListener


class CallbackGate:
    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._running = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def caller_waiting(self) -> AsyncIterator[None]:
        """Around the caller's wait for records: callbacks may run meanwhile, and
        leaving waits for a callback that has started."""
        self._open.set()
        try:
            yield
        finally:
            self._open.clear()
            async with self._running:
                pass

    @contextlib.asynccontextmanager
    async def callback(self) -> AsyncIterator[None]:
        while True:
            await self._open.wait()
            await self._running.acquire()
            if self._open.is_set():
                break
            self._running.release()
        try:
            yield
        finally:
            self._running.release()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No callback runs inside this block (``stop`` revokes here)."""
        async with self._running:
            yield

    def open_for_good(self) -> None:
        """Closing: never hold aiokafka's coordinator back again."""
        self._open.set()


class GroupListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's listener; tells ours about partitions of our topic through the gate.

    ``owned`` is what our listener has been told it holds (assigned, not yet
    revoked); it is updated after ``on_revoked`` returns (commits inside it still
    see the partitions) and before ``on_assigned`` runs.
    """

    def __init__(
        self,
        listener: RebalanceListener,
        gate: CallbackGate,
        *,
        topic: str,
        closing: Callable[[], bool],
        logger: logging.Logger,
    ) -> None:
        self.listener = listener
        self.owned: frozenset[int] = frozenset()
        self.revocations = 0
        """How many times aiokafka started revoking; records drained before the latest
        revocation belong to an assignment that is gone."""
        self._gate = gate
        self._topic = topic
        self._closing = closing
        self._log = logger

    def _ours(self, partitions: Iterable[Any]) -> frozenset[int]:
        return frozenset(tp.partition for tp in partitions if tp.topic == self._topic)

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self.revocations += 1
        async with self._gate.callback():
            if self._closing():
                return
            await self.revoke(self._ours(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        async with self._gate.callback():
            if self._closing():
                return
            now_ours = self._ours(assigned)
            # Eager rebalancing revoked everything already; this only matters if a
            # revoke was skipped, so that no partition is ever held twice.
            await self.revoke(self.owned - now_ours)
            gained = now_ours - self.owned
            if not gained:
                return
            self.owned |= gained
            try:
                await self.listener.on_assigned(gained)
            except Exception:
                self._log.exception("on_assigned failed for partitions %s", sorted(gained))

    async def revoke(self, partitions: frozenset[int]) -> None:
        """Tell our listener, then forget the partitions (call with the gate held)."""
        losing = partitions & self.owned
        if not losing:
            return
        try:
            await self.listener.on_revoked(losing)
        except Exception:
            self._log.exception("on_revoked failed for partitions %s", sorted(losing))
        finally:
            self.owned -= losing
