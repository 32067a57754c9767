"""Who holds the Lease, precisely enough that its death can be proven.

An election identity is ``<pod>_<suffix>``: the pod's name and a random suffix
per process, so a restarted container never resumes the term of its previous
life.  In a cluster, a process that is its container's init (PID 1: its exit *is*
the container's exit, and takes every other process of the container's PID
namespace with it) appends what kubelet reports about that container:
``<pod>_<suffix>_<pod uid>_<container id>``.  Only such an identity can be proven
dead (``aggregator.core.proof_of_death``); a short one is only ever replaced when
its lease expires, exactly as before.

Pod names are DNS subdomains and hold no ``_``; UIDs and container IDs hold none
either, so ``_`` separates the parts unambiguously.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aggregator.core.types import Identity

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SCOPE = re.compile(r"(?:cri-containerd|crio|docker)-([0-9a-f]{64})\.scope")


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One process's place in the election."""

    pod: str
    suffix: str
    pod_uid: str | None = None
    container_id: str | None = None
    """The runtime's ID of the container this process is init of (64 hex digits,
    without the ``containerd://`` scheme kubelet reports it with)."""

    def __post_init__(self) -> None:
        if not self.pod or "_" in self.pod or self.pod != self.pod.strip():
            raise ValueError(f"not a pod name for an election identity: {self.pod!r}")
        if not self.suffix or "_" in self.suffix or self.suffix != self.suffix.strip():
            raise ValueError(f"not a suffix for an election identity: {self.suffix!r}")
        if (self.pod_uid is None) != (self.container_id is None):
            raise ValueError("a pod UID and a container ID go together, or neither")
        if self.pod_uid is not None and not _UID.fullmatch(self.pod_uid):
            raise ValueError(f"not a pod UID: {self.pod_uid!r}")
        if self.container_id is not None and not _CONTAINER_ID.fullmatch(self.container_id):
            raise ValueError(f"not a container ID: {self.container_id!r}")

    @property
    def provable(self) -> bool:
        """Whether kubelet's reports can ever prove this incarnation dead."""
        return self.container_id is not None

    @property
    def identity(self) -> Identity:
        """What goes into the Lease's holderIdentity."""
        if self.pod_uid is None:
            return Identity(f"{self.pod}_{self.suffix}")
        return Identity(f"{self.pod}_{self.suffix}_{self.pod_uid}_{self.container_id}")

    @property
    def short(self) -> Identity:
        """``<pod>_<suffix>``: the name shown on the dashboard and in the members list."""
        return Identity(f"{self.pod}_{self.suffix}")


def parse_identity(identity: str | None) -> Incarnation | None:
    """The incarnation an identity names; None for anything else (another
    elector's identity, or none), which can then never be proven dead."""
    if not identity:
        return None
    parts = identity.split("_")
    try:
        if len(parts) == 2:
            return Incarnation(parts[0], parts[1])
        if len(parts) == 4:
            return Incarnation(parts[0], parts[1], parts[2], parts[3])
    except ValueError:
        return None
    return None


def short_identity(identity: str) -> str:
    """``<pod>_<suffix>`` of an identity of ours; any other identity unchanged."""
    incarnation = parse_identity(identity)
    return identity if incarnation is None else incarnation.short


def container_id_from_cgroup(text: str) -> str | None:
    """The container ID in ``/proc/self/cgroup`` as a kubelet-run container sees it.

    cgroupfs driver: every hierarchy ends in ``.../pod<uid>/<64 hex>``; systemd
    driver: ``.../cri-containerd-<64 hex>.scope`` (or ``crio-``, ``docker-``).
    The hierarchies must agree; a private cgroup namespace (``0::/``) or anything
    unexpected gives None, and with it no proof-capable identity.
    """
    found: set[str] = set()
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        last = parts[2].rstrip("/").rsplit("/", 1)[-1]
        scope = _SCOPE.fullmatch(last)
        if scope is not None:
            found.add(scope.group(1))
        elif _CONTAINER_ID.fullmatch(last):
            found.add(last)
        elif parts[2] != "/":
            return None  # a hierarchy that does not end in a container: not sure of any
    return found.pop() if len(found) == 1 else None
