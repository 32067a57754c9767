"""A coordination.k8s.io/v1 Lease as the leader-election lock.

No decisions here: get, create, replace against a resourceVersion (a conflict
means another writer got there first), and wait for the object to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aggregator.core.election import LeaseSpec

__all__ = [
    "LeaseClient",
    "LeaseConflict",
    "LeaseForbidden",
    "LeaseRecord",
    "LeaseSpec",
    "LeaseUnavailable",
]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    spec: LeaseSpec
    resource_version: str


class LeaseConflict(Exception):
    """409: the object changed (or exists) since it was read; re-read and decide again."""


class LeaseUnavailable(ConnectionError):
    """The API server did not answer in time or refused for a transient reason."""


class LeaseForbidden(PermissionError):
    """403: this identity may not read or write the lease (RBAC)."""


class LeaseClient(Protocol):
    @property
    def description(self) -> str:
        """namespace/name, for log lines."""
        ...

    async def get(self) -> LeaseRecord | None: ...

    async def create(self, spec: LeaseSpec) -> LeaseRecord: ...

    async def replace(self, resource_version: str, spec: LeaseSpec) -> LeaseRecord: ...

    async def wait_for_change(self, resource_version: str | None, timeout_s: float) -> None:
        """Return when the lease differs from ``resource_version`` or after the timeout.

        A server that does not answer within the timeout ends it like no change
        (the next read reports it unavailable); only an answer, such as a refusal
        or an error status, raises."""
        ...
