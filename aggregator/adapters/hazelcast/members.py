"""``MemberRegistry`` on a Hazelcast IMap: one entry per pod identity, with a TTL.

The TTL is the heartbeat's own (``ttl_s``), so a pod that stops heartbeating
vanishes from ``members`` by itself; ``leave`` removes it at once.
"""

from __future__ import annotations

import logging

from hazelcast.asyncio import HazelcastClient, Map

from aggregator.adapters.hazelcast.codec import Blob, CorruptValue, decode_member, encode_member
from aggregator.adapters.hazelcast.connection import unavailable_on_error
from aggregator.ports.members import MemberInfo

_log = logging.getLogger("aggregator.hazelcast.members")


class HazelcastMembers:
    """Implements ``MemberRegistry``; one per pod."""

    def __init__(self, client: HazelcastClient, *, map_name: str = "members") -> None:
        self._client = client
        self._map_name = map_name
        self._imap: Map[str, Blob] | None = None

    async def _map(self) -> Map[str, Blob]:
        if self._imap is None:
            with unavailable_on_error(f"cannot open map {self._map_name}"):
                self._imap = await self._client.get_map(self._map_name)
        return self._imap

    async def heartbeat(self, info: MemberInfo, ttl_s: float) -> None:
        imap = await self._map()
        with unavailable_on_error("cannot record the member heartbeat"):
            await imap.set(info.identity, encode_member(info), ttl=ttl_s)

    async def members(self) -> list[MemberInfo]:
        imap = await self._map()
        with unavailable_on_error("cannot list the members"):
            values: list[Blob] = await imap.values()
        found = []
        for value in values:
            try:
                found.append(decode_member(value))
            except CorruptValue as error:
                _log.warning("ignoring a member record: %s", error)
        return sorted(found, key=lambda m: m.pod)

    async def leave(self, identity: str) -> None:
        imap = await self._map()
        with unavailable_on_error("cannot remove the member record"):
            await imap.delete(identity)
