"""Pod statuses in memory: the test plays kubelet (``report``) and the API server
(``available``, ``forbid``); followers get every change, as a watch would give them.

The embedded demo has no kubelet and no pods to report on: it runs without proofs
of death, as any elector outside a cluster does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from aggregator.ports.pods import PodReport, PodsUnavailable


class MemoryPods:
    def __init__(self) -> None:
        self._pods: dict[str, PodReport] = {}
        self._changed = asyncio.Event()
        self.available = True
        """False: every follow fails (no answer, or RBAC withdrawn)."""
        self.follows = 0

    def report(self, pod: PodReport) -> None:
        """kubelet writes a pod's status (or the pod is created)."""
        self._pods[pod.name] = pod
        self._notify()

    def delete(self, name: str) -> None:
        self._pods.pop(name, None)
        self._notify()

    def cut(self) -> None:
        """The API server stops answering pod reads and watches."""
        self.available = False
        self._notify()

    async def follow(self, name: str) -> AsyncGenerator[PodReport | None, None]:
        self.follows += 1
        last: PodReport | bool | None = False  # nothing sent yet
        while True:
            if not self.available:
                raise PodsUnavailable(f"cannot watch pod {name}")
            current = self._pods.get(name)
            if current != last:
                last = current
                yield current
                continue  # it may have changed again while the caller had it
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
