"""A follower's eye on the Lease holder's pod: proof that the holder is dead.

The elector tells the witness whom the lease names (``watch``); the witness
follows that pod's status through the ``PodStatuses`` port and feeds every report
to ``DeathEvidence`` (the rules are in ``aggregator.core.proof_of_death``).  Once
a report proves the holder dead, ``proven_dead`` says why, and ``on_proof`` wakes
the elector, which then takes the lease without waiting for it to expire.

A pod that cannot be read (no answer, RBAC withdrawn) proves nothing: the witness
retries every ``retry_s`` and, meanwhile, the lease expires as it always did.  A
holder whose identity names no container (outside a cluster, or a process that is
not its container's init) is never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aggregator.core.incarnation import parse_identity
from aggregator.core.proof_of_death import DeathEvidence
from aggregator.ports.clock import Clock
from aggregator.ports.pods import PodStatuses, PodsUnavailable


class DeathWitness:
    def __init__(
        self,
        pods: PodStatuses,
        clock: Clock,
        *,
        retry_s: float,
        logger: logging.Logger | None = None,
    ) -> None:
        self._pods = pods
        self._clock = clock
        self._retry_s = retry_s
        self._log = logger or logging.getLogger("aggregator.witness")
        self._holder: str | None = None
        self._evidence: DeathEvidence | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_proof: Callable[[], None] = lambda: None
        self.failures = 0

    def watch(self, holder: str | None, on_proof: Callable[[], None]) -> None:
        """Follow the pod of ``holder`` (None: nobody, for instance while we lead)."""
        self._on_proof = on_proof
        if holder == self._holder:
            return
        self._holder = holder
        self._stop_following()
        incarnation = parse_identity(holder)
        if incarnation is None or not incarnation.provable:
            self._evidence = None
            return
        evidence = DeathEvidence(incarnation)
        self._evidence = evidence
        self._task = asyncio.create_task(self._follow(evidence), name=f"witness-{incarnation.pod}")

    def proven_dead(self, holder: str | None) -> str | None:
        """Why ``holder`` is known to be dead; None when it is not (or not followed)."""
        evidence = self._evidence
        if evidence is None or holder is None or evidence.holder.identity != holder:
            return None
        return evidence.proof

    async def close(self) -> None:
        self._holder = None
        self._evidence = None
        task = self._stop_following()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _stop_following(self) -> asyncio.Task[None] | None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def _follow(self, evidence: DeathEvidence) -> None:
        pod = evidence.holder.pod
        while True:
            try:
                async for report in self._pods.follow(pod):
                    proof = evidence.observe(report)
                    if proof is not None:
                        self._log.info("Lease holder %s is dead: %s", evidence.holder.short, proof)
                        self._on_proof()
                        return
            except PodsUnavailable as error:
                self.failures += 1
                self._log.log(
                    logging.WARNING if self.failures == 1 else logging.DEBUG,
                    "cannot follow the lease holder's pod %s (the lease will expire instead): %s",
                    pod,
                    error,
                )
            await self._clock.sleep(self._retry_s)
