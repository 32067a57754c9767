"""The ports on a Hazelcast cluster (hazelcast-python-client, asyncio API).

- ``connect``: the shared client, with timeouts that turn outages into errors.
- ``HazelcastStore`` / ``HazelcastFeed``: partials in IMap "partials", written
  with compare-and-set, followed by an entry listener.
- ``HazelcastBus``: the latest snapshot in IMap "results", delivery by ITopic
  "snapshots".
- ``HazelcastMembers``: pod heartbeats in IMap "members", with a TTL.
"""

from aggregator.adapters.hazelcast.bus import HazelcastBus
from aggregator.adapters.hazelcast.connection import connect
from aggregator.adapters.hazelcast.feed import HazelcastFeed
from aggregator.adapters.hazelcast.members import HazelcastMembers
from aggregator.adapters.hazelcast.store import HazelcastStore, StoreStats

__all__ = [
    "HazelcastBus",
    "HazelcastFeed",
    "HazelcastMembers",
    "HazelcastStore",
    "StoreStats",
    "connect",
]
