"""A watch on one Lease that ends at its first event: the blocking half of
``KubernetesLease.wait_for_change``, run in a worker thread.

The API server ends the watch after ``timeout_seconds`` and the socket read has
its own timeout, so a watch nobody stops still ends on its own; ``stop()`` (from
any thread) shuts the socket down so the worker thread ends at once.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

TOO_OLD = 410
"""Gone: the resourceVersion was compacted away; the lease may well have changed."""


class LeaseWatch:
    def __init__(self, leases: client.CoordinationV1Api, namespace: str, name: str) -> None:
        self._leases = leases
        self._namespace = namespace
        self._name = name
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._stopped = threading.Event()

    def first_event(
        self,
        resource_version: str | None,
        timeout_seconds: int,
        request_timeout_s: float,
    ) -> str | None:
        """Block until the lease changes after ``resource_version`` (None: until it
        exists) and return the event type; None when the watch ended without one
        (server timeout, or ``stop()``).  A compacted ``resource_version`` counts
        as a change ("ERROR"): the caller reads the lease again either way."""
        options: dict[str, Any] = {
            "field_selector": f"metadata.name={self._name}",
            "timeout_seconds": timeout_seconds,
            "_request_timeout": (request_timeout_s, timeout_seconds + request_timeout_s),
        }
        if resource_version is not None:
            options["resource_version"] = resource_version
        events = self._watch.stream(  # type: ignore[no-untyped-call]
            self._leases.list_namespaced_lease, self._namespace, **options
        )
        try:
            for event in events:
                return str(event["type"])
        except ApiException as error:
            if error.status == TOO_OLD:
                return "ERROR"
            if self._stopped.is_set():
                return None
            raise
        except Exception:
            if self._stopped.is_set():
                return None  # the socket was shut down under the read
            raise
        finally:
            events.close()
        return None

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()  # type: ignore[no-untyped-call]
