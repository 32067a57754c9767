"""The snapshot hub (every pod): receive published snapshots, keep the newest,
and hand it to each websocket client through a one-slot mailbox.

Snapshots whose epoch is lower than one already seen come from a deposed leader
and are dropped.  A slow client never builds a queue: an undelivered snapshot is
replaced by the next one.
"""

from __future__ import annotations

import asyncio
import logging

from aggregator.ports.bus import Published, SnapshotBus, Subscription

SERVICE_RESTART = 1012
"""Websocket close code "Service Restart" (RFC 6455 registry), sent when this pod
shuts down: the dashboard reconnects at once, and behind the Service it reaches
another pod.  (1001 would be "Going Away".)"""
TRY_AGAIN_LATER = 1013
"""Websocket close code "Try Again Later": no pod in this process can serve yet.

dashboard/connection.js holds the browser's copy of both codes; tests/unit/test_hub.py
holds the two equal."""


class Mailbox:
    """The latest undelivered snapshot for one client."""

    def __init__(self) -> None:
        self._pending: Published | None = None
        self._ready = asyncio.Event()
        self.closed_with: int | None = None
        self.replaced = 0

    def offer(self, message: Published) -> None:
        if self._pending is not None:
            self.replaced += 1
        self._pending = message
        self._ready.set()

    def close(self, code: int) -> None:
        self.closed_with = code
        self._ready.set()

    async def next(self) -> Published | None:
        """The next snapshot, or None once the hub closed this client."""
        await self._ready.wait()
        if self.closed_with is not None:
            return None
        message, self._pending = self._pending, None
        self._ready.clear()
        if message is None:
            return await self.next()
        return message


class SnapshotHub:
    def __init__(self, bus: SnapshotBus, logger: logging.Logger | None = None) -> None:
        self._bus = bus
        self._log = logger or logging.getLogger("aggregator.hub")
        self._subscription: Subscription | None = None
        self._clients: set[Mailbox] = set()
        self.latest: Published | None = None
        self.highest_epoch = -1
        self.stale_dropped = 0
        self.received = 0
        self.refused = 0
        """Websocket clients turned away: the pod already served its maximum."""

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(self.deliver)
        latest = await self._bus.latest()
        if latest is not None:
            self.deliver(latest)

    def deliver(self, message: Published) -> None:
        if message.epoch < self.highest_epoch:
            self.stale_dropped += 1
            return
        if (
            self.latest is not None
            and message.epoch == self.latest.epoch
            and (message.generated_at < self.latest.generated_at)
        ):
            self.stale_dropped += 1
            return
        self.received += 1
        self.highest_epoch = message.epoch
        self.latest = message
        for client in self._clients:
            client.offer(message)

    def connect(self) -> Mailbox:
        mailbox = Mailbox()
        self._clients.add(mailbox)
        if self.latest is not None:
            mailbox.offer(self.latest)
        return mailbox

    def disconnect(self, mailbox: Mailbox) -> None:
        self._clients.discard(mailbox)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def close(self, code: int = SERVICE_RESTART) -> None:
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        for client in self._clients:
            client.close(code)
        self._clients.clear()
