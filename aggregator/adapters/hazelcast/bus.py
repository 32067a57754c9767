"""``SnapshotBus`` on Hazelcast: the latest snapshot in an IMap, delivery by ITopic.

A plain ITopic rather than a reliable topic: a reliable topic keeps every message
in a ringbuffer (10,000 by default, each a whole snapshot) and every subscriber
polls it, while a snapshot is only worth anything until the next one, a second
later.  A subscriber that misses one (reconnecting, a member dying) gets the next;
a pod that starts reads ``latest`` first.  ``latest`` and the topic carry the same
bytes (codec.py: epoch, leader, generated_at, payload).

Failures raise ``StoreUnavailable`` (a ``ConnectionError``), the same as the
partial store: it is the same cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hazelcast.asyncio import HazelcastClient, Map, Topic
from hazelcast.errors import HazelcastError

from aggregator.adapters.hazelcast.codec import (
    Blob,
    CorruptValue,
    decode_published,
    encode_published,
)
from aggregator.adapters.hazelcast.connection import unavailable_on_error
from aggregator.ports.bus import Published

_log = logging.getLogger("aggregator.hazelcast.bus")

LATEST_KEY = "latest"


class HazelcastBus:
    """Implements ``SnapshotBus``; one per pod."""

    def __init__(
        self,
        client: HazelcastClient,
        *,
        map_name: str = "results",
        topic_name: str = "snapshots",
    ) -> None:
        self._client = client
        self._map_name = map_name
        self._topic_name = topic_name
        self._results: Map[str, Blob] | None = None
        self._topic: Topic[Blob] | None = None
        self.published = 0

    async def _proxies(self) -> tuple[Map[str, Blob], Topic[Blob]]:
        if self._results is None or self._topic is None:
            with unavailable_on_error("cannot open the snapshot map and topic"):
                self._results = await self._client.get_map(self._map_name)
                self._topic = await self._client.get_topic(self._topic_name)
        return self._results, self._topic

    async def publish(self, message: Published) -> None:
        results, topic = await self._proxies()
        value = encode_published(message)
        with unavailable_on_error("cannot publish the snapshot"):
            outcomes = await asyncio.gather(
                results.set(LATEST_KEY, value), topic.publish(value), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        self.published += 1

    async def latest(self) -> Published | None:
        results, _ = await self._proxies()
        with unavailable_on_error("cannot read the latest snapshot"):
            value = await results.get(LATEST_KEY)
        if value is None:
            return None
        try:
            return decode_published(value)
        except CorruptValue as error:
            _log.warning("ignoring the stored latest snapshot: %s", error)
            return None

    async def subscribe(self, deliver: Callable[[Published], None]) -> HazelcastSubscription:
        _, topic = await self._proxies()

        def on_message(event: object) -> None:
            value = getattr(event, "message", None)
            if not isinstance(value, (bytes, bytearray)):
                return
            try:
                message = decode_published(value)
            except CorruptValue as error:
                _log.warning("ignoring a message on %s: %s", self._topic_name, error)
                return
            try:
                deliver(message)
            except Exception:  # the client's reader must survive a subscriber's bug
                _log.exception("a snapshot subscriber failed")

        with unavailable_on_error(f"cannot subscribe to {self._topic_name}"):
            registration = await topic.add_listener(on_message)
        return HazelcastSubscription(topic, registration)


class HazelcastSubscription:
    def __init__(self, topic: Topic[Blob], registration: str) -> None:
        self._topic = topic
        self._registration: str | None = registration

    async def close(self) -> None:
        registration, self._registration = self._registration, None
        if registration is None:
            return
        try:
            await self._topic.remove_listener(registration)
        except (HazelcastError, OSError) as error:
            _log.warning("could not remove the snapshot listener: %s", error)
