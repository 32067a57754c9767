"""``PodStatuses`` on the API server: get one pod, then watch it.

The client blocks, so the get and the watch run in one worker thread per follow,
which hands each report to the event loop.  Verbs used: ``get`` on the pod, and
``watch`` on pods with ``fieldSelector=metadata.name=<pod>``; nothing else.  The
watch is renewed from the last resourceVersion when the server ends it, and
started over from a fresh get when that version is too old (410).  Stopping the
iteration shuts the watch's socket, so the thread ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from aggregator.ports.pods import ContainerReport, PodReport, PodsUnavailable

WATCH_S = 300
"""How long the server keeps one watch open before it is renewed."""

TOO_OLD = 410


class KubernetesPods:
    def __init__(
        self, api_client: client.ApiClient, namespace: str, request_timeout_s: float
    ) -> None:
        self._pods = client.CoreV1Api(api_client)
        self._namespace = namespace
        self._request_timeout_s = request_timeout_s

    async def follow(self, name: str) -> AsyncGenerator[PodReport | None, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[PodReport | None] | BaseException] = asyncio.Queue()
        follower = _Follower(self._pods, self._namespace, name, self._request_timeout_s)

        def put(item: tuple[PodReport | None] | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        thread = threading.Thread(
            target=follower.run, args=(put,), name=f"pod-watch-{name}", daemon=True
        )
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item[0]
        finally:
            follower.stop()


class _Follower:
    """The blocking half: get, then watch and re-watch, until stopped or failed."""

    def __init__(
        self, pods: client.CoreV1Api, namespace: str, name: str, request_timeout_s: float
    ) -> None:
        self._pods = pods
        self._namespace = namespace
        self._name = name
        self._request_timeout_s = request_timeout_s
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._watch is not None:
                self._watch.stop()  # type: ignore[no-untyped-call]

    def run(self, put: Any) -> None:
        try:
            while not self._stopped.is_set():
                version = self._get(put)
                while version is not None and not self._stopped.is_set():
                    version = self._watch_from(version, put)
        except Exception as error:
            if not self._stopped.is_set():
                put(_unavailable(error, self._namespace, self._name))

    def _get(self, put: Any) -> str | None:
        """Report the pod as it is now; the version to watch from ("" when absent)."""
        try:
            pod = self._pods.read_namespaced_pod(
                self._name, self._namespace, _request_timeout=self._request_timeout_s
            )
        except ApiException as error:
            if error.status != 404:
                raise
            put((None,))
            return ""
        put((pod_report(pod),))
        return str(pod.metadata.resource_version or "") if pod.metadata is not None else ""

    def _watch_from(self, version: str, put: Any) -> str | None:
        """One watch; the version to continue from, or None to get the pod again."""
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        with self._lock:
            if self._stopped.is_set():
                return None
            self._watch = stream
        options: dict[str, Any] = {
            "field_selector": f"metadata.name={self._name}",
            "timeout_seconds": WATCH_S,
            "_request_timeout": (self._request_timeout_s, WATCH_S + self._request_timeout_s),
        }
        if version:
            options["resource_version"] = version
        events = stream.stream(  # type: ignore[no-untyped-call]
            self._pods.list_namespaced_pod, self._namespace, **options
        )
        try:
            for event in events:
                if self._stopped.is_set():
                    return None
                kind, pod = event["type"], event["object"]
                if kind == "ERROR":
                    return None
                if kind == "DELETED":
                    put((None,))
                elif kind in ("ADDED", "MODIFIED"):
                    put((pod_report(pod),))
                if pod is not None and getattr(pod, "metadata", None) is not None:
                    version = str(pod.metadata.resource_version or version)
        except ApiException as error:
            if error.status == TOO_OLD:
                return None
            raise
        except Exception:
            if self._stopped.is_set():
                return None  # the socket was shut down under the read
            raise
        finally:
            events.close()
        return version


def pod_report(pod: client.V1Pod) -> PodReport:
    """What proofs need from a Pod: its name, UID and container statuses."""
    statuses = (pod.status.container_statuses if pod.status is not None else None) or []
    meta = pod.metadata or client.V1ObjectMeta()
    return PodReport(
        name=str(meta.name or ""),
        uid=str(meta.uid or ""),
        containers=tuple(_container(status) for status in statuses),
    )


def _container(status: client.V1ContainerStatus) -> ContainerReport:
    current = _bare(status.container_id)
    terminated = status.state.terminated if status.state is not None else None
    last = status.last_state.terminated if status.last_state is not None else None
    return ContainerReport(
        name=status.name,
        container_id=current,
        restart_count=status.restart_count or 0,
        terminated_id=(_bare(terminated.container_id) or current) if terminated else None,
        last_terminated_id=_bare(last.container_id) if last is not None else None,
    )


def _bare(container_id: str | None) -> str | None:
    """``containerd://abc`` -> ``abc``."""
    if not container_id:
        return None
    return container_id.rsplit("://", 1)[-1]


def _unavailable(error: Exception, namespace: str, name: str) -> PodsUnavailable:
    where = f"pod {namespace}/{name}"
    if isinstance(error, ApiException):
        if error.status in (401, 403):
            return PodsUnavailable(f"forbidden to get or watch {where} ({error.status})")
        return PodsUnavailable(f"cannot watch {where}: the API server answered {error.status}")
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        return PodsUnavailable(f"cannot watch {where}: no answer from the API server ({error})")
    return PodsUnavailable(f"cannot watch {where}: {error!r}")
