"""Leader election over a Lease, decided without I/O (client-go's rules).

Every function here takes time as an argument; the elector service feeds it the
local monotonic clock (expiry) and the wall clock (only for the times written into
the record, which are informative and never compared across nodes).

* A lease held by someone else expires ``lease_duration_seconds`` (as written in
  the record) after *we* observed its last change (client-go's observedTime), on
  our monotonic clock.  Another node's ``renewTime`` is never compared with ours.
* Acquiring counts a transition (``leaseTransitions + 1``, 0 on create) and that
  count is the fencing epoch; renewing keeps ``acquireTime`` and the count.
* Releasing writes holder ``""`` and a 1 s duration, keeping the count, so the
  next holder's epoch is still higher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from aggregator.core.types import Epoch, EpochSeconds, Identity

JITTER_FACTOR = 1.2
"""client-go's leader-election jitter: followers poll every retry x [1, 1 + 1.2)."""

WATCHDOG_TOLERANCE_S = 20.0
"""How long past the lease duration a leader may go unrenewed before /readyz fails."""

RELEASED_LEASE_DURATION_S = 1
"""leaseDurationSeconds written on release (client-go writes 1, not 0: 0 is invalid)."""

EXPIRY_SPREAD = 0.25
"""Followers wake when the observed lease expires plus up to this fraction of the
retry period, so several of them do not all write in the same instant."""

_TIMING_NAMES = ("lease_duration_s", "renew_deadline_s", "retry_period_s")


@dataclass(frozen=True, slots=True)
class LeaseSpec:
    """The spec of a coordination.k8s.io/v1 Lease: what the decision reads, what
    the elector writes, and what the lease port carries (with the object's
    resourceVersion, ``LeaseRecord``).  The one Lease value type of every layer."""

    holder_identity: str | None
    lease_duration_seconds: int
    acquire_time: EpochSeconds | None
    """Wall-clock epoch seconds; informative only, never compared across nodes."""
    renew_time: EpochSeconds | None
    lease_transitions: int


def check_lease_timings(
    lease: float,
    renew_deadline: float,
    retry: float,
    *,
    jitter_factor: float = JITTER_FACTOR,
    names: tuple[str, str, str] = _TIMING_NAMES,
) -> None:
    """client-go's rule: lease > renew deadline > jitter factor x retry period > 0.

    ``names`` are what the messages call the three values (settings pass their
    environment variable names).  Raises ValueError naming the offending one.
    """
    lease_name, deadline_name, retry_name = names
    for name, value in zip(names, (lease, renew_deadline, retry), strict=True):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} ({value:g}) must be a positive number of seconds")
    if not math.isfinite(jitter_factor) or jitter_factor < 0:
        raise ValueError(f"jitter factor ({jitter_factor:g}) must be a number >= 0")
    if not lease > renew_deadline:
        raise ValueError(
            f"{lease_name} ({lease:g}) must be greater than {deadline_name} ({renew_deadline:g})"
        )
    if not renew_deadline > jitter_factor * retry:
        raise ValueError(
            f"{deadline_name} ({renew_deadline:g}) must be greater than "
            f"{jitter_factor:g} x {retry_name} ({retry:g})"
        )


@dataclass(frozen=True, slots=True)
class ElectionTimings:
    """How long a lease lasts, how long a leader keeps trying to renew it, how
    often everyone retries.  Defaults are client-go's."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    jitter_factor: float = JITTER_FACTOR

    def __post_init__(self) -> None:
        check_lease_timings(
            self.lease_duration_s,
            self.renew_deadline_s,
            self.retry_period_s,
            jitter_factor=self.jitter_factor,
        )

    @property
    def lease_duration_seconds(self) -> int:
        """The whole seconds written into the record (rounded up, never shorter)."""
        return math.ceil(self.lease_duration_s)

    @property
    def request_timeout_s(self) -> float:
        """The longest one API call may take before it counts as failed."""
        return max(1.0, self.renew_deadline_s / 2)


def make_identity(pod_name: str, suffix: str) -> Identity:
    """``pod_name + "_" + suffix``; a fresh suffix per process means a restarted
    container never resumes the term of its previous life."""
    if not pod_name or not pod_name.strip():
        raise ValueError("the pod name of an election identity cannot be empty")
    if not suffix or not suffix.strip():
        raise ValueError("the suffix of an election identity cannot be empty")
    return Identity(f"{pod_name}_{suffix}")


# -- deciding --------------------------------------------------------------------


class Action(Enum):
    ACQUIRE = "acquire"
    """Write ourselves as a new holder (create the lease when it is absent)."""
    RENEW = "renew"
    """We hold it: write a fresh renew time."""
    FOLLOW = "follow"
    """Someone else holds a lease that has not expired by our observation."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    terms: LeaseSpec | None
    """What to write (None when following)."""
    epoch: Epoch | None
    """The epoch we hold once the write succeeds (None when following)."""
    expires_at: float | None
    """Following: the monotonic time at which the observed lease expires."""


def expires_at(observed: LeaseSpec, observed_at: float) -> float:
    """When a lease last seen changing at ``observed_at`` (monotonic) expires."""
    return observed_at + observed.lease_duration_seconds


def is_held(observed: LeaseSpec | None) -> bool:
    return observed is not None and bool(observed.holder_identity)


def decide(
    me: str,
    observed: LeaseSpec | None,
    observed_at: float,
    now: float,
    wall_now: EpochSeconds,
    timings: ElectionTimings,
    *,
    holder_dead: bool = False,
    eligible: bool = True,
) -> Decision:
    """What to do about the lease last read as ``observed`` (None: it does not exist).

    ``observed_at`` and ``now`` are monotonic: the time this process saw the record
    change and the current time.  ``wall_now`` only goes into the written record.
    ``holder_dead``: the observed holder is *proven* dead
    (``aggregator.core.proof_of_death``), so its lease may be taken before it
    expires; never true on mere silence.  ``eligible`` false: this process must
    not take the lease now (it could not do a leader's work), only follow.
    """
    if not eligible:
        expiry = expires_at(observed, observed_at) if observed and is_held(observed) else None
        return Decision(Action.FOLLOW, None, None, expiry)
    if observed is None:
        terms = acquire_terms(me, None, wall_now, timings)
        return Decision(Action.ACQUIRE, terms, terms.lease_transitions, None)
    if observed.holder_identity == me:
        terms = renew_terms(observed, wall_now, timings)
        return Decision(Action.RENEW, terms, terms.lease_transitions, None)
    if is_held(observed):
        expiry = expires_at(observed, observed_at)
        if now < expiry and not holder_dead:
            return Decision(Action.FOLLOW, None, None, expiry)
    terms = acquire_terms(me, observed, wall_now, timings)
    return Decision(Action.ACQUIRE, terms, terms.lease_transitions, None)


def acquire_terms(
    me: str, previous: LeaseSpec | None, wall_now: EpochSeconds, timings: ElectionTimings
) -> LeaseSpec:
    """Take the lease: a new term, so one more transition (0 when creating it)."""
    return LeaseSpec(
        holder_identity=me,
        lease_duration_seconds=timings.lease_duration_seconds,
        acquire_time=wall_now,
        renew_time=wall_now,
        lease_transitions=0 if previous is None else previous.lease_transitions + 1,
    )


def renew_terms(mine: LeaseSpec, wall_now: EpochSeconds, timings: ElectionTimings) -> LeaseSpec:
    """Extend our own term: same acquire time, same transition count (same epoch)."""
    return LeaseSpec(
        holder_identity=mine.holder_identity,
        lease_duration_seconds=timings.lease_duration_seconds,
        acquire_time=mine.acquire_time if mine.acquire_time is not None else wall_now,
        renew_time=wall_now,
        lease_transitions=mine.lease_transitions,
    )


def release_terms(mine: LeaseSpec, wall_now: EpochSeconds) -> LeaseSpec:
    """Give the lease back: nobody holds it, and it lasts 1 s for anyone who still
    judges it by expiry; the transition count stays, so epochs keep increasing."""
    return LeaseSpec(
        holder_identity="",
        lease_duration_seconds=RELEASED_LEASE_DURATION_S,
        acquire_time=wall_now,
        renew_time=wall_now,
        lease_transitions=mine.lease_transitions,
    )


# -- waiting and health ------------------------------------------------------------


def jittered(period_s: float, jitter_factor: float, unit_random: float) -> float:
    """``period x (1 + unit_random x jitter_factor)`` for ``unit_random`` in [0, 1)."""
    if not 0.0 <= unit_random < 1.0:
        raise ValueError(f"unit_random must be in [0, 1), got {unit_random!r}")
    return period_s * (1.0 + unit_random * jitter_factor)


def follower_wait(
    timings: ElectionTimings, unit_random: float, now: float, expiry: float | None
) -> float:
    """How long a follower waits before reading the lease again (unless it changes).

    A jittered retry period, as client-go; but never much past the moment the
    observed lease expires, so a dead leader is replaced at expiry rather than up
    to a whole jittered period later.
    """
    wait = jittered(timings.retry_period_s, timings.jitter_factor, unit_random)
    if expiry is not None:
        at_expiry = expiry - now + unit_random * EXPIRY_SPREAD * timings.retry_period_s
        wait = min(wait, at_expiry)
    return max(0.0, wait)


def renew_deadline_at(renewed_at: float, timings: ElectionTimings) -> float:
    """When a leader whose last successful write was sent at ``renewed_at`` must stop."""
    return renewed_at + timings.renew_deadline_s


def within_renew_deadline(renewed_at: float, now: float, timings: ElectionTimings) -> bool:
    """Whether a leader may still act: no one else can have taken over yet.

    Others wait a full lease duration from when they saw our last write, which
    happened after ``renewed_at`` (the time the write was sent), and the renew
    deadline is shorter than the lease duration.
    """
    return now < renew_deadline_at(renewed_at, timings)


def watchdog_healthy(
    renewed_at: float,
    now: float,
    timings: ElectionTimings,
    tolerance_s: float = WATCHDOG_TOLERANCE_S,
) -> bool:
    """client-go's healthz adaptor: a leader unrenewed for lease + tolerance is stuck."""
    return now - renewed_at <= timings.lease_duration_s + tolerance_s
