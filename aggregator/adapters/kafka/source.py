"""``KafkaSource``: the ``EventSource`` port on an aiokafka consumer group.

Offsets are committed only by ``commit`` (auto-commit is off); a group that has
none starts at the earliest retained record.  Rebalance callbacks reach the
listener only while the caller waits in ``fetch`` (see ``rebalance.py``), and
``stop`` revokes the whole assignment through the listener before leaving the
group, because aiokafka itself does not call the listener on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError

from aggregator.adapters.kafka.errors import unavailable
from aggregator.adapters.kafka.handshake import check_access
from aggregator.adapters.kafka.options import KafkaOptions
from aggregator.adapters.kafka.rebalance import CallbackGate, GroupListener
from aggregator.adapters.kafka.records import to_records
from aggregator.ports.source import RebalanceListener, SourceRecord, SourceUnavailable

MIB = 1024 * 1024
FETCH_GRACE_S = 0.1
"""How long past ``timeout_s`` a fetch may wait (aiokafka blocks during a rebalance)."""


def fetch_limits(max_message_bytes: int) -> tuple[int, int]:
    """``(max_partition_fetch_bytes, fetch_max_bytes)`` for a consumer.

    Kafka returns a partition's first record batch even when it is larger than
    these limits, so an oversized message still arrives (and the map stage
    rejects it as ``too_large``) instead of stalling its partition; the limits
    only bound how much memory one fetch may take.
    """
    per_partition = max(MIB, 2 * max_message_bytes)
    return per_partition, max(16 * MIB, 4 * per_partition)


class KafkaSource:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        client_id: str,
        *,
        options: KafkaOptions | None = None,
        max_message_bytes: int = 65536,
        session_timeout_s: float = 10.0,
        heartbeat_interval_s: float = 3.0,
        request_timeout_s: float = 10.0,
        start_timeout_s: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if heartbeat_interval_s >= session_timeout_s:
            raise ValueError("the heartbeat interval must be shorter than the session timeout")
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._group_id = group_id
        self._client_id = client_id
        self._options = options or KafkaOptions()
        self._max_message_bytes = max_message_bytes
        self._session_timeout_s = session_timeout_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._request_timeout_s = request_timeout_s
        self._start_timeout_s = start_timeout_s
        self._log = logger or logging.getLogger("aggregator.kafka")
        self._consumer: AIOKafkaConsumer | None = None
        self._group: GroupListener | None = None
        self._gate = CallbackGate()
        self._closing = False

    @property
    def name(self) -> str:
        return self._topic

    # -- lifecycle -------------------------------------------------------------

    async def start(self, listener: RebalanceListener) -> None:
        """Connect, check that the topic exists, join the group (assignment arrives
        during the following fetches).  Unreachable brokers, a missing topic or a
        start that takes longer than ``start_timeout_s`` raise ``SourceUnavailable``;
        credentials the broker refuses raise ``SourceRefused`` before aiokafka starts."""
        if self._consumer is not None:
            raise RuntimeError("the Kafka source is already started")
        self._gate = CallbackGate()
        self._closing = False
        group = GroupListener(
            listener,
            self._gate,
            topic=self._topic,
            closing=lambda: self._closing,
            logger=self._log,
        )
        await check_access(self._bootstrap, self._options, timeout_s=self._request_timeout_s)
        consumer = self._new_consumer()
        try:
            with unavailable(self._bootstrap, f"join consumer group {self._group_id!r}"):
                async with asyncio.timeout(self._start_timeout_s):
                    await consumer.start()
                    topics = await consumer.topics()
            if self._topic not in topics:
                raise SourceUnavailable(
                    f"Kafka at {self._bootstrap}: topic {self._topic!r} does not exist "
                    "(create it, or check the topic setting)"
                )
            consumer.subscribe([self._topic], listener=group)
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._consumer, self._group = consumer, group
        self._log.info(
            "joining consumer group %r on topic %r at %s as %r",
            self._group_id,
            self._topic,
            self._bootstrap,
            self._client_id,
        )

    def _new_consumer(self) -> AIOKafkaConsumer:
        per_partition, total = fetch_limits(self._max_message_bytes)
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=per_partition,
            fetch_max_bytes=total,
            session_timeout_ms=int(self._session_timeout_s * 1000),
            heartbeat_interval_ms=int(self._heartbeat_interval_s * 1000),
            request_timeout_ms=int(self._request_timeout_s * 1000),
            **self._options.client_kwargs(),
        )

    async def stop(self) -> None:
        """Revoke the whole assignment through the listener (it flushes and commits),
        then leave the group so the other members take over at once."""
        consumer, group = self._consumer, self._group
        if consumer is None or group is None:
            return
        self._closing = True
        try:
            async with self._gate.exclusive():
                await group.revoke(group.owned)
        finally:
            self._gate.open_for_good()
            self._consumer = None
            with unavailable(self._bootstrap, f"leave consumer group {self._group_id!r}"):
                async with asyncio.timeout(2 * self._request_timeout_s):
                    await consumer.stop()

    def _started(self) -> tuple[AIOKafkaConsumer, GroupListener]:
        if self._consumer is None or self._group is None:
            raise RuntimeError("start() the Kafka source first")
        return self._consumer, self._group

    # -- reading ---------------------------------------------------------------

    async def fetch(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        consumer, group = self._started()
        if self._closing:
            return []
        async with self._gate.caller_waiting():
            batches, drained_after = await self._drain(consumer, group, max_records, timeout_s)
        if self._closing or group.revocations != drained_after:
            # The records belong to an assignment revoked since: the new assignment
            # reads again from the committed offsets.
            return []
        owned = group.owned
        records: list[SourceRecord] = []
        for tp, messages in batches.items():
            if not messages:
                continue
            if tp.topic == self._topic and tp.partition in owned:
                records.extend(to_records(tp.partition, messages))
            elif tp in consumer.assignment():
                # Fetched before on_assigned ran: read them again afterwards.
                consumer.seek(tp, messages[0].offset)
        return records

    async def _drain(
        self, consumer: AIOKafkaConsumer, group: GroupListener, max_records: int, timeout_s: float
    ) -> tuple[dict[TopicPartition, list[Any]], int]:
        """getmany, and the revocation count at the moment it returned (no await in
        between, so no callback can slip in)."""
        try:
            async with asyncio.timeout(timeout_s + FETCH_GRACE_S):
                with unavailable(self._bootstrap, f"fetch from topic {self._topic!r}"):
                    batches = await consumer.getmany(
                        timeout_ms=int(timeout_s * 1000), max_records=max_records
                    )
                    return batches, group.revocations
        except TimeoutError:
            return {}, group.revocations  # aiokafka waits for a rebalance to finish
        except ConsumerStoppedError:
            return {}, group.revocations

    # -- offsets ---------------------------------------------------------------

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit the next offset to read, for the given partitions still held."""
        if self._consumer is None or self._group is None:
            return
        owned = self._group.owned
        ours = {TopicPartition(self._topic, p): o for p, o in offsets.items() if p in owned}
        if not ours:
            return
        with unavailable(self._bootstrap, f"commit offsets {_show(ours)}"):
            async with asyncio.timeout(self._request_timeout_s):
                await self._consumer.commit(ours)

    async def seek(self, partition: int, offset: int) -> None:
        consumer, group = self._started()
        tp = TopicPartition(self._topic, partition)
        if partition in group.owned and tp in consumer.assignment():
            consumer.seek(tp, offset)

    async def committed(self, partition: int) -> int | None:
        consumer, _ = self._started()
        tp = TopicPartition(self._topic, partition)
        with unavailable(self._bootstrap, f"read the committed offset of partition {partition}"):
            async with asyncio.timeout(self._request_timeout_s):
                offset: int | None = await consumer.committed(tp)
        return offset

    async def end_offsets(self) -> dict[int, int]:
        if self._consumer is None or self._group is None:
            return {}  # nothing assigned before start (the heartbeat may ask early)
        consumer, group = self._started()
        tps = [TopicPartition(self._topic, p) for p in sorted(group.owned)]
        if not tps:
            return {}
        with unavailable(self._bootstrap, "read end offsets"):
            async with asyncio.timeout(self._request_timeout_s):
                ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    def assignment(self) -> frozenset[int]:
        return self._group.owned if self._group is not None else frozenset()


def _show(offsets: Mapping[TopicPartition, int]) -> str:
    return "{" + ", ".join(f"{tp.partition}: {o}" for tp, o in sorted(offsets.items())) + "}"
