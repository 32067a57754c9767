"""``SteadyProducer``: the exactness scenarios' messages into Kafka at a steady rate.

It sends them in the background, to chosen partitions, with the record timestamp
equal to the event time (so nothing is late or future), and re-sends what the
broker did not acknowledge.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.support.stream import Planned, StreamMaker


class SteadyProducer:
    """Sends ``maker``'s messages at ``rate`` per second until ``stop()``; what the
    broker does not acknowledge is sent again (a broker restart stalls it, and it
    catches up afterwards).  Every wait is bounded; a client that makes no progress
    for ``STUCK_S`` is replaced by a new one."""

    SEND_S = 15.0
    STUCK_S = 30.0

    def __init__(self, bootstrap: str, topic: str, maker: StreamMaker, *, rate: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.maker = maker
        self.rate = rate
        self.delivered: list[tuple[Planned, int]] = []
        """Acknowledged sends, with the offset the broker gave them."""
        self.resent: set[int] = set()
        """Sequence numbers of the messages that had to be sent more than once."""
        self.clients = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout_s: float = 120.0) -> None:
        """Stop making messages; return once everything made is acknowledged."""
        self._stop.set()
        if self._task is not None:
            async with asyncio.timeout(timeout_s):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        made = 0
        unsent: list[Planned] = []
        producer = await self._connect()
        progress_at = loop.time()
        try:
            while unsent or not self._stop.is_set():
                if not self._stop.is_set():
                    due = int((loop.time() - started) * self.rate) + 1
                    unsent += [self.maker.make(time.time()) for _ in range(made, due)]
                    made = max(made, due)
                before = len(unsent)
                unsent = await self._send(producer, unsent)
                if len(unsent) < before or not unsent:
                    progress_at = loop.time()
                if loop.time() - progress_at > self.STUCK_S:
                    await self._close(producer)
                    producer = await self._connect()
                    progress_at = loop.time()
                if unsent:
                    await asyncio.sleep(0.5)
                else:
                    await asyncio.sleep(max(0.0, made / self.rate - (loop.time() - started)))
        finally:
            await self._close(producer)

    async def _connect(self) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                # not idempotent: aiokafka's idempotent producer wedges for good once a
                # batch expires in a broker outage (see adapters/kafka/dead_letters.py)
                enable_idempotence=False,
                linger_ms=5,
                request_timeout_ms=10_000,
            )
            try:
                async with asyncio.timeout(self.SEND_S):
                    await producer.start()
            except Exception:
                await self._close(producer)
                await asyncio.sleep(1.0)
                continue
            self.clients += 1
            return producer

    async def _close(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.SEND_S):
                await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, batch: list[Planned]) -> list[Planned]:
        """Send a batch; return what was not acknowledged within ``SEND_S``."""
        sends: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.SEND_S):
                for planned in batch:
                    sends.append(
                        await producer.send(
                            self.topic,
                            planned.value,
                            key=planned.key,
                            partition=planned.partition,
                            timestamp_ms=planned.timestamp_ms,
                            headers=list(planned.headers),
                        )
                    )
        except Exception:
            pass  # what was not handed to the client is sent again
        if sends:
            await asyncio.wait(sends, timeout=self.SEND_S)
        failed = batch[len(sends) :]
        for planned, sent in zip(batch, sends, strict=False):
            if sent.done() and not sent.cancelled() and sent.exception() is None:
                self.delivered.append((planned, int(sent.result().offset)))
            else:
                failed.append(planned)
        self.resent.update(planned.seq for planned in failed)
        return failed
