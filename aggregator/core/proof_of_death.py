"""When a Lease holder is *known* to be dead, from what kubelet reports.

Silence proves nothing: a holder cut off from the API server still runs, and a
pod object that disappears may belong to a process still running on a node that
lost contact (``kubectl delete --force --grace-period=0``).  What does prove it is
kubelet's report of the container the holder's process was init of
(``aggregator.core.incarnation``): kubelet writes a termination for a container
ID, or counts a restart past it, only after the runtime has seen that container's
init exit, and a container's init cannot outlive its container.

The rules, for a holder ``<pod>_<suffix>_<uid>_<cid>`` and a report of the pod
named ``<pod>``:

1. The report is about that very pod: its UID is ``<uid>`` (a new pod of the same
   name, as a StatefulSet makes, proves nothing about the old one).
2. Some container status reports ``<cid>`` as terminated: in ``state.terminated``
   (its current container ended) or ``lastState.terminated`` (it was restarted).
3. Or an earlier report showed ``<cid>`` as the current container of a name with
   restartCount ``n``, and this one shows that name with a higher count: kubelet
   starts the next container of a name only after the previous one exited.

A report that cannot be read, a pod that is gone, or a holder identity without a
container proves nothing; the lease then expires as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aggregator.core.incarnation import Incarnation


@dataclass(frozen=True, slots=True)
class ContainerReport:
    """One entry of a Pod's ``status.containerStatuses``."""

    name: str
    container_id: str | None
    """The current (or last) container of this name, without the runtime scheme."""
    restart_count: int
    terminated_id: str | None = None
    """``state.terminated.containerID`` (or the current ID when only the state
    says terminated)."""
    last_terminated_id: str | None = None
    """``lastState.terminated.containerID``."""


@dataclass(frozen=True, slots=True)
class PodReport:
    """What the API server says about one pod, as far as proofs need it."""

    name: str
    uid: str
    containers: tuple[ContainerReport, ...] = ()


@dataclass
class DeathEvidence:
    """What one follower has seen of one holder's pod, report after report."""

    holder: Incarnation
    proof: str | None = None
    """Why the holder is known to be dead (None: it is not)."""
    _current_count: dict[str, int] = field(default_factory=dict)
    """Per container name: the restart count at which the holder's container was current."""

    def observe(self, report: PodReport | None) -> str | None:
        """Take one report (None: the pod is absent); returns the proof once there is one."""
        if self.proof is not None or report is None or not self.holder.provable:
            return self.proof
        if report.name != self.holder.pod or report.uid != self.holder.pod_uid:
            return None
        cid = self.holder.container_id
        for container in report.containers:
            if cid in (container.terminated_id, container.last_terminated_id):
                self.proof = (
                    f"kubelet reports container {container.name} ({_short(cid)}) of pod "
                    f"{report.name} terminated"
                )
                return self.proof
            seen = self._current_count.get(container.name)
            if container.container_id == cid:
                self._current_count[container.name] = container.restart_count
            elif seen is not None and container.restart_count > seen:
                self.proof = (
                    f"kubelet restarted container {container.name} of pod {report.name} "
                    f"after {_short(cid)} (restart count {seen} -> {container.restart_count})"
                )
                return self.proof
        return None


def _short(container_id: str | None) -> str:
    return (container_id or "?")[:12]
