"""``aggregator run``: one pod on Kafka, Hazelcast and the Kubernetes Lease.

Servers that cannot be reached at start are retried with a log line (the pod is
not ready meanwhile); configuration that cannot work (no namespace outside a
cluster, no permission on the lease) stops the process with one line.  SIGTERM
runs the graceful path before the HTTP server exits: stop fetching, flush,
commit, stop reducing, release the lease, close websockets with 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from aggregator.adapters.hazelcast.bus import HazelcastBus
from aggregator.adapters.hazelcast.connection import connect
from aggregator.adapters.hazelcast.feed import HazelcastFeed
from aggregator.adapters.hazelcast.members import HazelcastMembers
from aggregator.adapters.hazelcast.store import HazelcastStore
from aggregator.adapters.kafka.dead_letters import KafkaDeadLetters
from aggregator.adapters.kafka.options import KafkaOptions
from aggregator.adapters.kafka.source import KafkaSource
from aggregator.adapters.kubernetes.environment import (
    from_environment,
    in_cluster,
    own_container,
    pods_of,
)
from aggregator.adapters.memory.clock import SystemClock
from aggregator.api.app import create_app
from aggregator.core.incarnation import parse_identity
from aggregator.ports.lease import LeaseForbidden, LeaseUnavailable
from aggregator.ports.store import StoreUnavailable
from aggregator.services.pod import Pod, PodPorts, new_identity
from aggregator.services.retry import Backoff, retry
from aggregator.wiring.compose import pod_settings
from aggregator.wiring.serving import server_config
from aggregator.wiring.settings import Settings

log = logging.getLogger("aggregator.run")

START_BACKOFF = Backoff(first_s=1.0, max_s=15.0)
"""Between attempts to reach Hazelcast at start-up."""


class StartupError(Exception):
    """A configuration or permission problem; one line, exit status 2."""


@dataclass
class SinglePod:
    """The ``Backend`` of a production process: exactly one pod."""

    pod: Pod

    def front(self) -> Pod | None:
        return self.pod

    def pods(self) -> list[Pod]:
        return [self.pod]


def kafka_options(settings: Settings) -> KafkaOptions:
    """The Kafka security options, checked now (certificate files are read here)."""
    try:
        options = KafkaOptions(
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )
        options.client_kwargs()
    except (ValueError, OSError) as error:
        raise StartupError(f"invalid Kafka security settings: {error}") from None
    return options


def kafka_source(
    settings: Settings,
    identity: str,
    options: KafkaOptions,
    source_class: type[KafkaSource] = KafkaSource,
) -> KafkaSource:
    """The pod's consumer-group source (``source_class``: a benchmark's subclass)."""
    return source_class(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic,
        settings.kafka_group,
        f"{settings.kafka_client_id}-{identity}",
        options=options,
        max_message_bytes=settings.max_message_bytes,
        session_timeout_s=settings.kafka_session_timeout_seconds,
        heartbeat_interval_s=settings.kafka_session_timeout_seconds / 3,
    )


def scoped(settings: Settings, structure: str) -> str:
    """The name of a Hazelcast map or topic in this deployment's scope."""
    return scoped_name(structure, settings.hazelcast_scope)


def scoped_name(structure: str, scope: str) -> str:
    """The name of a Hazelcast map or topic in ``scope`` (``AGG_HAZELCAST_SCOPE``)."""
    return f"{structure}.{scope}"


def partial_store(settings: Settings, hazelcast: Any, identity: str) -> HazelcastStore:
    """The pod's partial store: entries live as long as the map stage keeps them."""
    return HazelcastStore(
        hazelcast,
        writer=identity,
        ttl_s=pod_settings(settings).fold.retention_seconds,
        map_name=scoped(settings, "partials"),
    )


async def connect_store(settings: Settings, identity: str) -> Any:
    def failed(error: Exception, delay: float) -> None:
        log.warning("Hazelcast not reachable yet (%s); retrying in %.0f s", error, delay)

    return await retry(
        lambda: connect(
            settings.hazelcast_members, settings.hazelcast_cluster_name, client_name=identity
        ),
        errors=StoreUnavailable,
        backoff=START_BACKOFF,
        clock=SystemClock(),
        on_error=failed,
    )


async def _check_lease_access(lease: Any) -> None:
    """Fail at once, clearly, when RBAC does not let us read the lease."""
    try:
        await lease.get()
    except LeaseForbidden as error:
        raise StartupError(str(error)) from None
    except LeaseUnavailable as error:
        log.warning("Kubernetes API not reachable yet (%s); the elector will retry", error)


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT, stop the pod gracefully first, then let uvicorn exit."""

    def __init__(self, config: uvicorn.Config, pod: Pod) -> None:
        super().__init__(config)
        self._pod = pod
        self._stopping: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping is not None:
            super().handle_exit(sig, frame)  # a second signal: exit now
            return
        log.info("received %s; shutting down gracefully", signal.Signals(sig).name)
        loop = asyncio.get_event_loop()
        self._stopping = loop.create_task(self._graceful())

    async def _graceful(self) -> None:
        try:
            await self._pod.stop()
        finally:
            self.should_exit = True


GC_THRESHOLDS = (50_000, 20, 20)
"""Young collection every 50,000 net allocations (CPython's default: 700)."""


def tune_garbage_collector() -> None:
    """Collect less often, and never look at what start-up built again.

    The map stage holds each fetched batch (5,000 records, some 10 tracked
    objects per event) until it is folded.  With the default thresholds that
    many survivors keep pushing the collector into older generations, up to
    full passes over the whole heap: a third of a map process's time at 100k
    events/s (bench.suite: 1.4-1.7x the events/s with these settings).  Nearly
    everything is freed by reference counting anyway; the cyclic garbage a
    larger threshold lets wait is a few megabytes at most.
    """
    gc.freeze()  # modules, settings, clients: long-lived, never garbage
    gc.set_threshold(*GC_THRESHOLDS)


def run(settings: Settings) -> int:
    tune_garbage_collector()
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    identity = new_identity(settings.pod_name)
    timings = pod_settings(settings)
    try:
        lease = from_environment(
            settings.lease_name,
            settings.lease_namespace,
            settings.kubeconfig,
            request_timeout_s=max(1.0, settings.renew_deadline_seconds / 2),
        )
    except (ValueError, OSError) as error:
        raise StartupError(f"cannot set up the Kubernetes lease: {error}") from None
    await _check_lease_access(lease)
    lease_identity, takeover_on_proof = _lease_identity(settings, identity)
    options = kafka_options(settings)
    hazelcast = await connect_store(settings, identity)
    dead_letters = None
    if settings.kafka_dlq_topic:
        dead_letters = KafkaDeadLetters(
            settings.kafka_bootstrap_servers,
            settings.kafka_dlq_topic,
            source_topic=settings.kafka_topic,
            options=options,
        )
    source = kafka_source(settings, identity, options)
    ports = PodPorts(
        source=source,
        store=partial_store(settings, hazelcast, identity),
        feed=HazelcastFeed(hazelcast, map_name=scoped(settings, "partials")),
        lease=lease,
        bus=HazelcastBus(
            hazelcast,
            map_name=scoped(settings, "results"),
            topic_name=scoped(settings, "snapshots"),
        ),
        registry=HazelcastMembers(hazelcast, map_name=scoped(settings, "members")),
        clock=SystemClock(),
        dead_letters=dead_letters,
        pods=pods_of(lease) if takeover_on_proof else None,
    )
    pod = Pod(settings.pod_name, ports, timings, identity=identity, lease_identity=lease_identity)
    failure: list[BaseException] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The map stage starts the dead-letter producer with its source: a broker
        # that is down or refuses us leaves the pod serving, and not ready.
        await pod.start()
        watchdog = asyncio.create_task(_watch(pod, server, failure))
        try:
            yield
        finally:
            watchdog.cancel()
            await pod.stop()
            if dead_letters is not None:
                await dead_letters.stop()
            await hazelcast.shutdown()
            lease.close()

    app = create_app(SinglePod(pod), lifespan=lifespan, ws_max_clients=settings.ws_max_clients)
    config = server_config(
        app, host=settings.http_host, port=settings.http_port, log_level=settings.log_level
    )
    server = GracefulServer(config, pod)
    await server.serve()
    if failure:
        cause = failure[0]
        if isinstance(cause, LeaseForbidden):
            raise StartupError(str(cause))
        log.error("stopped after an unexpected error: %s", cause)
        return 1
    return 0 if server.started else 1


def _lease_identity(settings: Settings, identity: str) -> tuple[str, bool]:
    """What the Lease names while this pod leads, and whether followers here take
    over on proof of death: in a cluster, the identity names this process's pod
    UID and container when they can prove its death (core/incarnation.py)."""
    takeover = (
        settings.lease_takeover_on_proof and in_cluster(os.environ) and not settings.kubeconfig
    )
    container = own_container(os.environ) if takeover else None
    incarnation = parse_identity(identity)
    if container is None or incarnation is None:
        if takeover:
            log.info("this pod's death cannot be proven from kubelet's reports (%s)", identity)
        return identity, takeover
    uid, container_id = container
    full = dataclasses.replace(incarnation, pod_uid=uid, container_id=container_id)
    return full.identity, takeover


async def _watch(pod: Pod, server: uvicorn.Server, failure: list[BaseException]) -> None:
    """A pod task that ends by itself is fatal: record why and shut down."""
    try:
        await pod.wait()
    except asyncio.CancelledError:
        raise
    except BaseException as error:
        failure.append(error)
        server.should_exit = True
