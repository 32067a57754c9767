"""``LeaseClient`` on a coordination.k8s.io/v1 Lease, through the official client.

The client blocks, so every call runs in a worker thread (``asyncio.to_thread``)
with a request timeout (the elector passes max(1 s, renew deadline / 2)); the
coroutine also stops waiting a moment after that timeout, so even an ``ApiClient``
that retries on its own (urllib3's default) fails in time.

Status codes become the port's errors: 404 on get is "absent"; 409 (and 404 on
update) is ``LeaseConflict``; 401/403 ``LeaseForbidden``; 5xx, 408, 429, timeouts
and connection errors ``LeaseUnavailable``; other refusals (422 Invalid, a missing
namespace) ``LeaseRejected``, a ``ValueError`` as in the memory adapter.

No decisions here: what to write, and when, is the elector's business.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aggregator.adapters.kubernetes.errors import translate
from aggregator.adapters.kubernetes.microtime import from_micro_time, to_micro_time
from aggregator.adapters.kubernetes.watch import LeaseWatch
from aggregator.ports.clock import Clock, SystemClock, wait_first
from aggregator.ports.lease import LeaseRecord, LeaseSpec, LeaseUnavailable

T = TypeVar("T")

GRACE_S = 0.25
"""How long past the request timeout the coroutine waits for the worker thread."""


class KubernetesLease:
    """One pod's handle on the Lease ``namespace/name``.

    ``api_client`` is a loaded client (``from_environment`` builds one with
    urllib3's retries off, so a request fails after one request timeout, not
    four).  With ``owns_client``, ``close()`` closes it.  ``clock`` times
    ``wait_for_change`` (the system's by default).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        request_timeout_s: float,
        *,
        owns_client: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if not namespace or not name:
            raise ValueError("a lease needs a namespace and a name")
        if not request_timeout_s > 0:
            raise ValueError(f"request timeout must be positive (got {request_timeout_s})")
        self._api_client = api_client
        self._leases = client.CoordinationV1Api(api_client)
        self._namespace = namespace
        self._name = name
        self._request_timeout_s = float(request_timeout_s)
        self._owns_client = owns_client
        self._clock: Clock = clock or SystemClock()
        self._last: client.V1Lease | None = None
        """The object last read or written: a replace keeps its metadata (labels,
        annotations) as client-go does."""

    @property
    def description(self) -> str:
        return f"{self._namespace}/{self._name}"

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def name(self) -> str:
        return self._name

    @property
    def request_timeout_s(self) -> float:
        return self._request_timeout_s

    @property
    def api_client(self) -> client.ApiClient:
        return self._api_client

    def close(self) -> None:
        """Close the ``ApiClient`` if this lease created it."""
        if self._owns_client:
            self._api_client.close()  # type: ignore[no-untyped-call]

    # -- LeaseClient ------------------------------------------------------------------

    async def get(self) -> LeaseRecord | None:
        def read() -> client.V1Lease | None:
            try:
                return self._leases.read_namespaced_lease(
                    self._name, self._namespace, _request_timeout=self._request_timeout_s
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise

        lease = await self._call("get", read)
        return None if lease is None else self._seen(lease)

    async def create(self, spec: LeaseSpec) -> LeaseRecord:
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self._name), spec=_wire_spec(spec))
        lease = await self._call(
            "create",
            lambda: self._leases.create_namespaced_lease(
                self._namespace, body, _request_timeout=self._request_timeout_s
            ),
        )
        return self._seen(lease)

    async def replace(self, resource_version: str, spec: LeaseSpec) -> LeaseRecord:
        body = client.V1Lease(metadata=self._metadata(resource_version), spec=_wire_spec(spec))
        lease = await self._call(
            "update",
            lambda: self._leases.replace_namespaced_lease(
                self._name, self._namespace, body, _request_timeout=self._request_timeout_s
            ),
        )
        return self._seen(lease)

    async def wait_for_change(self, resource_version: str | None, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        watcher = LeaseWatch(self._leases, self._namespace, self._name)
        # The server ends the watch after whole seconds; this coroutine returns
        # at timeout_s and stops the watch, which ends the worker thread.
        server_timeout = max(1, math.ceil(timeout_s))
        # Silence is a timeout, never an error: the watch's own connect (and TLS
        # handshake) timeout outlasts this wait, so a server that does not answer
        # always ends it as "no change", whichever timer would have fired first.
        # Only an answer (a refusal, an error status, a reset) raises.
        patience_s = max(self._request_timeout_s, timeout_s + GRACE_S)
        first = asyncio.ensure_future(
            asyncio.to_thread(watcher.first_event, resource_version, server_timeout, patience_s)
        )
        first.add_done_callback(_retrieve)
        try:
            done = await wait_first(self._clock, timeout_s, first)
        finally:
            if not first.done():
                watcher.stop()
        if not done:
            return
        try:
            first.result()
        except Exception as error:
            translated = translate(error, "watch", self.description)
            if translated is error:
                raise
            raise translated from error

    # -- helpers ----------------------------------------------------------------------

    async def _call(self, verb: str, request: Callable[[], T]) -> T:
        limit = self._request_timeout_s + GRACE_S
        try:
            return await asyncio.wait_for(asyncio.to_thread(request), limit)
        except TimeoutError as error:
            raise LeaseUnavailable(
                f"{verb} lease {self.description}: no answer from the API server "
                f"within {self._request_timeout_s:g} s"
            ) from error
        except Exception as error:
            translated = translate(error, verb, self.description)
            if translated is error:
                raise
            raise translated from error

    def _seen(self, lease: client.V1Lease) -> LeaseRecord:
        record = _record(lease, self.description)
        self._last = lease
        return record

    def _metadata(self, resource_version: str) -> client.V1ObjectMeta:
        """The metadata to send with a replace: ``resource_version`` (the server
        refuses the write with 409 unless it is current), and the labels,
        annotations and owners of the object last seen, which a PUT would
        otherwise erase."""
        meta = client.V1ObjectMeta(name=self._name, resource_version=resource_version)
        last = self._last.metadata if self._last is not None else None
        if last is not None and last.resource_version == resource_version:
            meta.labels = last.labels
            meta.annotations = last.annotations
            meta.owner_references = last.owner_references
            meta.finalizers = last.finalizers
        return meta


def _wire_spec(spec: LeaseSpec) -> client.V1LeaseSpec:
    # holder_identity "" stays "" (a released lease, as client-go writes it).
    return client.V1LeaseSpec(
        holder_identity=spec.holder_identity,
        lease_duration_seconds=spec.lease_duration_seconds,
        acquire_time=to_micro_time(spec.acquire_time),
        renew_time=to_micro_time(spec.renew_time),
        lease_transitions=spec.lease_transitions,
    )


def _record(lease: client.V1Lease, description: str) -> LeaseRecord:
    version = lease.metadata.resource_version if lease.metadata is not None else None
    if not version:
        raise LeaseUnavailable(f"lease {description}: the API server sent no resourceVersion")
    spec = lease.spec or client.V1LeaseSpec()
    # Absent numbers read as 0, as client-go reads them.
    return LeaseRecord(
        spec=LeaseSpec(
            holder_identity=spec.holder_identity,
            lease_duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=from_micro_time(spec.acquire_time),
            renew_time=from_micro_time(spec.renew_time),
            lease_transitions=spec.lease_transitions or 0,
        ),
        resource_version=version,
    )


def _retrieve(future: asyncio.Future[str | None]) -> None:
    """Mark a late watch outcome as seen (no "exception never retrieved" noise)."""
    if not future.cancelled():
        future.exception()
