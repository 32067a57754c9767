"""The Lease in memory: one ``MemoryLeaseServer`` plays the API server (one Lease
object), one ``MemoryLeaseClient`` per pod talks to it.

It keeps the API server's rules that leader election relies on: every write bumps
a cluster-wide integer resourceVersion; create fails if the object exists and
replace fails unless the caller names the current resourceVersion (both are
``LeaseConflict``, the 409); invalid specs are rejected (``ValueError``, the 422).
A replace of an object that does not exist is also a ``LeaseConflict`` here (the
real server answers 404): either way the caller re-reads and decides again.

Failures to simulate:

* ``server.available = False``: an outage; every call raises ``LeaseUnavailable``
  and open ``wait_for_change`` calls are dropped.
* ``client.available = False``: one pod cut off (or killed); the same, for it only.
* ``server.pause()`` / ``server.resume()``: the server hangs (SIGSTOP); calls
  neither succeed nor fail until it resumes, so callers need their own timeouts.
"""

from __future__ import annotations

import asyncio

from aggregator.ports.clock import Clock, SystemClock, wait_first
from aggregator.ports.lease import LeaseConflict, LeaseRecord, LeaseSpec, LeaseUnavailable


class MemoryLeaseServer:
    def __init__(self) -> None:
        self._record: LeaseRecord | None = None
        self._revision = 0
        self._available = True
        self._paused = False
        self._watchers: set[asyncio.Future[None]] = set()
        self._resumers: set[asyncio.Future[None]] = set()
        self.writes = 0

    # -- what tests look at and do ------------------------------------------------------

    @property
    def record(self) -> LeaseRecord | None:
        return self._record

    @property
    def available(self) -> bool:
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = value
        self.notify()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        for future in self._resumers:
            if not future.done():
                future.set_result(None)
        self._resumers.clear()

    def overwrite(self, spec: LeaseSpec) -> LeaseRecord:
        """An out-of-band write (``kubectl apply``): no resourceVersion check."""
        return self._store(spec)

    def delete(self) -> None:
        """``kubectl delete lease``."""
        self._record = None
        self._revision += 1
        self.notify()

    # -- what clients call ------------------------------------------------------------------

    async def gate(self) -> None:
        """Wait while the server is paused, then fail if it is down."""
        while self._paused:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._resumers.add(future)
            try:
                await future
            finally:
                self._resumers.discard(future)
        if not self._available:
            raise LeaseUnavailable("memory lease server is unavailable")

    def create(self, spec: LeaseSpec) -> LeaseRecord:
        if self._record is not None:
            raise LeaseConflict("the lease already exists")
        return self._store(spec)

    def replace(self, resource_version: str, spec: LeaseSpec) -> LeaseRecord:
        current = self._record
        if current is None:
            raise LeaseConflict("the lease does not exist (any more)")
        if current.resource_version != resource_version:
            raise LeaseConflict(
                f"the lease changed: resourceVersion is {current.resource_version}, "
                f"not {resource_version}"
            )
        return self._store(spec)

    def watch(self) -> asyncio.Future[None]:
        """A future resolved at the next change (or change of availability)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.add(future)
        return future

    def unwatch(self, future: asyncio.Future[None]) -> None:
        self._watchers.discard(future)

    def notify(self) -> None:
        for future in self._watchers:
            if not future.done():
                future.set_result(None)
        self._watchers.clear()

    def _store(self, spec: LeaseSpec) -> LeaseRecord:
        _validate(spec)
        self._revision += 1
        self._record = LeaseRecord(spec=spec, resource_version=str(self._revision))
        self.writes += 1
        self.notify()
        return self._record


def _validate(spec: LeaseSpec) -> None:
    """The checks the API server makes on a Lease spec that matter here."""
    if spec.lease_duration_seconds <= 0:
        raise ValueError(
            f"spec.leaseDurationSeconds: must be greater than 0 (got {spec.lease_duration_seconds})"
        )
    if spec.lease_transitions < 0:
        raise ValueError(
            f"spec.leaseTransitions: must be greater than or equal to 0 "
            f"(got {spec.lease_transitions})"
        )


class MemoryLeaseClient:
    """One pod's connection to the memory API server (``LeaseClient``)."""

    def __init__(
        self,
        server: MemoryLeaseServer,
        name: str = "stream-aggregator",
        namespace: str = "default",
        *,
        clock: Clock | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.namespace = namespace
        self._clock: Clock = clock or SystemClock()
        self._available = True
        self.calls = 0

    @property
    def description(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def available(self) -> bool:
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = value
        self.server.notify()  # drop this client's open watches

    async def get(self) -> LeaseRecord | None:
        await self._enter()
        return self.server.record

    async def create(self, spec: LeaseSpec) -> LeaseRecord:
        await self._enter()
        return self.server.create(spec)

    async def replace(self, resource_version: str, spec: LeaseSpec) -> LeaseRecord:
        await self._enter()
        return self.server.replace(resource_version, spec)

    async def wait_for_change(self, resource_version: str | None, timeout_s: float) -> None:
        await self._enter()
        deadline = self._clock.monotonic() + timeout_s
        while self._current_version() == resource_version:
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return
            change = self.server.watch()
            try:
                await wait_first(self._clock, remaining, change)
            finally:
                self.server.unwatch(change)
                change.cancel()
            self._check_reachable()

    def _current_version(self) -> str | None:
        record = self.server.record
        return None if record is None else record.resource_version

    async def _enter(self) -> None:
        self.calls += 1
        self._check_reachable()
        await self.server.gate()
        self._check_reachable()

    def _check_reachable(self) -> None:
        if not self._available:
            raise LeaseUnavailable(f"lease {self.description}: this client is cut off")
        if not self.server.available:
            raise LeaseUnavailable(f"lease {self.description}: the API server is unavailable")
