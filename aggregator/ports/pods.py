"""Reading what kubelet reports about one pod: its status, as it changes.

Only what proofs of death need (``aggregator.core.proof_of_death``): the Lease's
followers follow the holder's pod, with ``get`` and ``watch`` on pods and nothing
more.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from aggregator.core.proof_of_death import ContainerReport, PodReport

__all__ = ["ContainerReport", "PodReport", "PodStatuses", "PodsUnavailable"]


class PodsUnavailable(ConnectionError):
    """The pod cannot be read or watched right now (no answer, no permission)."""


class PodStatuses(Protocol):
    def follow(self, name: str) -> AsyncGenerator[PodReport | None, None]:
        """The pod ``name`` now (None while it does not exist), then again at each
        change, until the caller stops iterating.  Raises ``PodsUnavailable`` when
        it cannot read or watch; the caller follows again later."""
        ...
