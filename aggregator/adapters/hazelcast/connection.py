"""The Hazelcast client the adapters share, and what its errors mean to them.

Timeouts are chosen so an outage surfaces as an error within seconds instead of
a hang, and so the client heals by itself once the cluster is back:

- Reconnect mode ASYNC: while no member is connected, every call fails at once
  with ``ClientOfflineError`` (``StoreUnavailable`` to the services), and the
  client keeps reconnecting in the background, without end.
- Invocation timeout of a few seconds: a call whose member died is retried on the
  new partition owner within that budget, then fails.
- Start-up is bounded by ``connect_timeout_s``.  The client's own cluster connect
  timeout covers both the first connection and every later reconnection, and a
  client that exhausts it shuts itself down for good.  So a short-lived probe
  client with the bounded timeout checks the cluster first (wrong address or
  cluster name fail here, with one clear error), then the real client starts with
  an unbounded reconnect budget.  Both use only the public API; the probe costs
  a few tens of milliseconds on loopback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from hazelcast.asyncio import HazelcastClient
from hazelcast.config import ReconnectMode
from hazelcast.errors import (
    ClassCastError,
    HazelcastError,
    HazelcastSerializationError,
    IllegalArgumentError,
    NullPointerError,
    QueryError,
    UnsupportedOperationError,
)

from aggregator.ports.store import StoreUnavailable

_log = logging.getLogger("aggregator.hazelcast")

_PROGRAMMING_ERRORS = (
    ClassCastError,
    HazelcastSerializationError,
    IllegalArgumentError,
    NullPointerError,
    QueryError,
    UnsupportedOperationError,
)
"""Errors that mean this adapter asked for something wrong: never "retry later"."""


def client_config(
    members: Sequence[str],
    cluster_name: str,
    *,
    client_name: str,
    connect_timeout_s: float = 10.0,
    invocation_timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Keyword arguments of ``HazelcastClient`` for a long-running pod."""
    return {
        "cluster_members": list(members),
        "cluster_name": cluster_name,
        "client_name": client_name,
        "smart_routing": True,
        "reconnect_mode": ReconnectMode.ASYNC,
        "cluster_connect_timeout": -1,  # reconnect without end; see the module doc
        "connection_timeout": max(0.5, min(5.0, connect_timeout_s / 2)),
        "invocation_timeout": invocation_timeout_s,
        "invocation_retry_pause": min(0.5, invocation_timeout_s / 4),
        "heartbeat_interval": 1.0,
        "heartbeat_timeout": max(5.0, 2 * invocation_timeout_s),
        "retry_initial_backoff": 0.2,
        "retry_max_backoff": 2.0,
        "statistics_enabled": False,
    }


async def connect(
    members: Sequence[str],
    cluster_name: str,
    *,
    client_name: str,
    connect_timeout_s: float = 10.0,
    invocation_timeout_s: float = 5.0,
) -> HazelcastClient:
    """A started asyncio client, smart routing on; ``StoreUnavailable`` if no
    member of ``cluster_name`` answers within ``connect_timeout_s``."""
    config = client_config(
        members,
        cluster_name,
        client_name=client_name,
        connect_timeout_s=connect_timeout_s,
        invocation_timeout_s=invocation_timeout_s,
    )
    # (Not reconnect mode OFF for the probe: in client 5.7 a connection closed by
    # shutdown() then re-enters shutdown() and waits on its own lock forever.)
    probe_config = config | {
        "client_name": f"{client_name}-probe",
        "cluster_connect_timeout": connect_timeout_s,
    }
    probe = await _start(
        probe_config,
        f"no member of Hazelcast cluster {cluster_name!r} at {', '.join(members)} "
        f"accepted a connection within {connect_timeout_s:g} s",
    )
    await probe.shutdown()
    # A member restarting between the probe and now can still fail the start
    # (e.g. "Listener cannot be added"); the caller retries.
    client = await _start(
        config, f"Hazelcast cluster {cluster_name!r} answered, then the client failed to start"
    )
    _log.info("connected to Hazelcast cluster %r as %s", cluster_name, client_name)
    return client


async def _start(config: dict[str, Any], failure: str) -> HazelcastClient:
    try:
        return await HazelcastClient.create_and_start(**config)
    except HazelcastError as error:
        raise StoreUnavailable(f"{failure}: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def unavailable_on_error(what: str) -> Iterator[None]:
    """Turn connection-type failures of the block into ``StoreUnavailable``."""
    try:
        yield
    except (StoreUnavailable, *_PROGRAMMING_ERRORS):
        raise
    except (HazelcastError, OSError, TimeoutError) as error:
        raise StoreUnavailable(f"{what}: {type(error).__name__}: {error}") from error
