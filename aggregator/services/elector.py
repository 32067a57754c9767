"""The leader elector: every pod runs one; the pod holding the Lease leads.

The rules live in ``aggregator.core.election``; this module does the talking and
the waiting, on the injected clock:

* Expiry is judged on the monotonic clock from when this process saw the record
  change (observedTime), never from another node's renewTime.
* Followers read the lease every jittered retry period, wake when the observed
  lease expires, and wake at once when it changes (``wait_for_change``), so a
  released lease is taken over in well under a second.
* Writes replace the object last read (its resourceVersion); a 409 means we lost
  a race: read again, decide again.  The leader renews every retry period with
  the resourceVersion of its own last write, without reading first.
* Every call has a deadline (``timings.request_timeout_s``, and never past the
  renew deadline while leading).  A leader that has not renewed successfully
  within the renew deadline, measured from when its last successful write was
  *sent*, stops leading (cancels the leading task, runs ``on_stopped_leading``)
  at that deadline: others wait a whole lease duration from when they saw that
  write, so they cannot have taken over yet.  ``leading_epoch()`` applies the
  same deadline on every call, so even a stalled loop never lets the reducer
  publish past it.
* ``stop()`` (and cancelling ``run()``) stops leading, then releases the lease
  (holder "", 1 s, transitions kept), shielded from cancellation.
* If the leading task crashes, the elector gives up the lease (releases it) and
  holds back for a retry period so another pod takes over; if it raised
  ``StepDown`` (it cannot do its work from this pod), for a whole lease duration.
* With ``eligible``, a follower takes no lease while ``eligible()`` is false (in
  a pod: while it cannot reach the store, so it could not publish); it keeps
  reading the lease and reporting the leader meanwhile.
* With a ``DeathWitness`` (in a cluster), a follower also follows the holder's
  pod and takes the lease at once when kubelet's reports prove the holder's
  container exited, instead of waiting for the lease to expire
  (``aggregator.core.proof_of_death``); the epoch still counts every transition.
* API errors are logged and retried; ``run()`` never raises for them, with one
  exception: ``LeaseForbidden`` before any call has succeeded (RBAC is missing,
  retrying will not help) is logged and raised so the CLI can exit with one line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from aggregator.core import election
from aggregator.core.election import Action, ElectionTimings
from aggregator.core.types import Epoch, Identity
from aggregator.ports.clock import Clock, wait_first
from aggregator.ports.lease import (
    LeaseClient,
    LeaseConflict,
    LeaseForbidden,
    LeaseRecord,
    LeaseSpec,
    LeaseUnavailable,
)
from aggregator.services.leading import LeadingTerm, StepDown
from aggregator.services.witness import DeathWitness

T = TypeVar("T")

MAX_RACES = 3
"""Conflicts (409) in a row within one attempt before waiting a retry period."""


class _Outcome(Enum):
    HOLDING = "holding"
    FOLLOWING = "following"
    FAILED = "failed"


@dataclass
class _State:
    """What the elector remembers between attempts, besides the record it saw."""

    contacted: bool = False
    """Some call got an answer: from then on ``LeaseForbidden`` is retried, not fatal."""
    uncertain: bool = False
    """A write of ours got no answer: it may have landed unseen."""
    failures: int = 0
    """Failed attempts in a row (the first is logged, the rest at DEBUG)."""
    hold_off_until: float = -math.inf
    """Monotonic time before which we do not try to take the lease (after giving it up)."""
    last_watch: tuple[str | None, bool] = (None, False)
    """(resourceVersion watched, whether the watch ended the pause)."""


class Elector:
    def __init__(
        self,
        client: LeaseClient,
        clock: Clock,
        identity: str,
        timings: ElectionTimings,
        on_started_leading: Callable[[int], Awaitable[None]],
        on_stopped_leading: Callable[[], Awaitable[None]] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
        witness: DeathWitness | None = None,
        eligible: Callable[[], bool] | None = None,
    ) -> None:
        if not identity:
            raise ValueError("an elector needs a non-empty identity")
        self._client = client
        self._clock = clock
        self._identity = Identity(identity)
        self._timings = timings
        self._on_new_leader = on_new_leader
        self._witness = witness
        self._eligible = eligible
        self._standing = True
        """Whether we stood for the lease at the last decision (logged on change)."""
        self._rng = rng or random.Random()
        self._log = logger or logging.getLogger("aggregator.elector")

        self._observed: LeaseRecord | None = None
        self._observed_at = clock.monotonic()
        """Monotonic time at which ``_observed`` was first seen (client-go's observedTime)."""
        self._reported = ""
        self._leading = LeadingTerm(
            clock,
            on_started_leading,
            on_stopped_leading,
            on_failed=self._wake_up,
            cancel_wait_s=timings.request_timeout_s,
            identity=identity,
            lease=client.description,
            logger=self._log,
        )
        self._renewed_at: float | None = None
        """Monotonic time at which our last successful write was sent."""
        self._next_renew_at = -math.inf
        self._state = _State()

        self._stopping = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # -- state --------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def leader(self) -> str | None:
        """The holder in the last record this elector read or wrote (None: nobody)."""
        record = self._observed
        return (record.spec.holder_identity or None) if record is not None else None

    @property
    def epoch(self) -> int | None:
        """The epoch of the term this elector leads (None while following)."""
        return self._leading.epoch

    def leading_epoch(self) -> int | None:
        """The epoch while leading and within the renew deadline of the last
        successful renewal; None otherwise.  Check before every publish."""
        if self._leading.epoch is None or self._renewed_at is None or self._stopping:
            return None
        if not election.within_renew_deadline(
            self._renewed_at, self._clock.monotonic(), self._timings
        ):
            return None
        return self._leading.epoch

    def is_leader(self) -> bool:
        return self.leading_epoch() is not None

    def healthy(self) -> bool:
        """False while the lease (as last seen) is ours and has gone unrenewed for
        longer than lease duration + 20 s: the elector is stuck (client-go's
        healthz adaptor)."""
        record = self._observed
        if record is None or record.spec.holder_identity != self._identity:
            return True
        if self._renewed_at is None:
            return True
        return election.watchdog_healthy(self._renewed_at, self._clock.monotonic(), self._timings)

    def _wake_up(self) -> None:
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Take part in the election until ``stop()`` (or cancellation).

        Raises ``LeaseForbidden`` only if the very first calls are refused (no
        RBAC for the lease); every other API error is logged and retried.
        """
        if self._loop_task is not None:
            raise RuntimeError("Elector.run() can be called only once")
        if self._stopping:
            return
        self._log.info(
            "Taking part in leader election for lease %s as %s",
            self._client.description,
            self._identity,
        )
        loop = asyncio.create_task(self._loop(), name=f"elector-{self._identity}")
        self._loop_task = loop
        try:
            await loop
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # run() itself was cancelled
            # stop() cancelled the loop: a normal end
        finally:
            await asyncio.shield(self._shutdown())

    async def stop(self) -> None:
        """Stop renewing, end the leading task, run ``on_stopped_leading`` and
        release the lease if we hold it.  Safe to call twice, and before ``run()``."""
        self._stopping = True
        self._wake.set()
        await asyncio.shield(self._shutdown())

    def _shutdown(self) -> asyncio.Task[None]:
        """The one shutdown, started by whichever of ``run()``'s end and ``stop()``
        comes first; the other awaits the same task."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._leave_election())
        return self._shutdown_task

    async def _leave_election(self) -> None:
        self._stopping = True
        loop = self._loop_task
        if loop is not None and not loop.done():
            loop.cancel()
            await asyncio.wait({loop})
        try:
            await self._leading.end("the elector is stopping")
            await self._release()
        except Exception:  # never leave a shutdown half done on a surprise
            self._log.exception("Leader election shutdown failed")
        finally:
            if self._witness is not None:  # after the release, which observes the lease
                await self._witness.close()
        self._log.info("Left leader election for lease %s", self._client.description)

    # -- the loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            if self._leading.epoch is None:
                await self._follow_round()
            else:
                await self._lead_round()

    async def _follow_round(self) -> None:
        outcome = await self._attempt()
        if outcome is _Outcome.HOLDING or self._stopping:
            return
        unit = self._rng.random()
        if outcome is _Outcome.FAILED:
            t = self._timings
            await self._pause(election.jittered(t.retry_period_s, t.jitter_factor, unit))
            return
        record = self._observed
        version = record.resource_version if record is not None else None
        expiry = None
        if record is not None and election.is_held(record.spec):
            expiry = election.expires_at(record.spec, self._observed_at)
        now = self._clock.monotonic()
        wait = election.follower_wait(self._timings, unit, now, expiry)
        if now < self._state.hold_off_until:  # stand again the moment it ends
            wait = min(wait, self._state.hold_off_until - now)
        # A watch that ended the last pause although nothing changed is not to be
        # trusted twice in a row: sleep this one out instead of busy-reading.
        spurious = self._state.last_watch == (version, True)
        woken = await self._pause(wait, watch=not spurious, version=version)
        self._state.last_watch = (version, woken)

    async def _lead_round(self) -> None:
        renewed_at = self._renewed_at
        assert renewed_at is not None
        deadline = election.renew_deadline_at(renewed_at, self._timings)
        await self._pause(min(self._next_renew_at, deadline) - self._clock.monotonic())
        if self._stopping:
            return
        failure = self._leading.failure()
        if failure is not None:
            await self._give_up(failure)
            return
        now = self._clock.monotonic()
        if now >= deadline:
            await self._stop_at_renew_deadline()
            return
        if now < self._next_renew_at:
            return
        self._next_renew_at = now + self._timings.retry_period_s
        await self._attempt()
        if self._leading.epoch is not None and self.leading_epoch() is None and not self._stopping:
            await self._stop_at_renew_deadline()

    async def _stop_at_renew_deadline(self) -> None:
        await self._leading.end(
            f"failed to renew the lease within the renew deadline "
            f"({self._timings.renew_deadline_s:g} s)"
        )

    async def _pause(
        self, seconds: float, *, watch: bool = False, version: str | None = None
    ) -> bool:
        """Wait ``seconds`` on the clock, or until ``stop()`` or a leading-task
        crash; with ``watch``, also until the lease changes from ``version``.
        True when the watch ended the wait."""
        self._wake.clear()
        if self._stopping or self._leading.failure() is not None:
            return False
        if seconds <= 0:
            await asyncio.sleep(0)
            return False
        end = self._clock.monotonic() + seconds
        waker = asyncio.ensure_future(self._wake.wait())
        waiting: list[asyncio.Future[Any]] = [waker]
        watcher = None
        if watch:
            watcher = asyncio.ensure_future(self._client.wait_for_change(version, seconds))
            waiting.append(watcher)
        try:
            done = await wait_first(self._clock, seconds, *waiting)
        finally:
            for future in waiting:
                future.cancel()
        if watcher is None or watcher not in done:
            return False
        failed = watcher.cancelled() or watcher.exception() is not None  # (retrieves it)
        if waker in done:
            return False
        if failed:
            # A failing watch must not turn into a busy loop: wait out the rest.
            self._log.debug("watching lease %s failed; waiting instead", self._client.description)
            await self._pause(end - self._clock.monotonic())
            return False
        return True

    # -- one try ----------------------------------------------------------------------

    async def _attempt(self) -> _Outcome:
        """Renew, acquire or follow, once; never raises for API errors except a
        ``LeaseForbidden`` before any call ever succeeded."""
        started = self._clock.monotonic()
        try:
            outcome = await self._acquire_or_renew(started)
        except LeaseForbidden as error:
            if not self._state.contacted:
                self._log.error(
                    "Forbidden to use lease %s as %s; giving up, as retrying will not "
                    "grant the missing RBAC permissions: %s",
                    self._client.description,
                    self._identity,
                    error,
                )
                raise
            self._failed(error)
            return _Outcome.FAILED
        except (LeaseUnavailable, LeaseConflict) as error:
            self._failed(error)
            return _Outcome.FAILED
        except Exception as error:  # e.g. the API server rejects the request as invalid
            self._failed(error, unexpected=True)
            return _Outcome.FAILED
        if self._state.failures:
            self._log.info(
                "Lease %s answers again after %d failed attempt(s)",
                self._client.description,
                self._state.failures,
            )
            self._state.failures = 0
        return outcome

    async def _acquire_or_renew(self, started: float) -> _Outcome:
        observed = self._observed
        if (
            self._leading.epoch is not None
            and observed is not None
            and observed.spec.holder_identity == self._identity
        ):
            # Fast path: renew what we wrote last, without reading first.
            terms = election.renew_terms(observed.spec, self._clock.time(), self._timings)
            try:
                written = await self._write(observed, terms)
            except LeaseConflict:
                self._log.debug("lease %s changed under us; reading it", self._client.description)
            else:
                await self._held(written, started, self._leading.epoch)
                return _Outcome.HOLDING
        for _ in range(MAX_RACES):
            record = await self._call(self._client.get)
            self._observe(record)
            holder = record.spec.holder_identity if record is not None else None
            proof = self._witness.proven_dead(holder) if self._witness is not None else None
            # Holding off after giving the lease up: follow (and report who leads),
            # but do not stand yet.
            held_off = self._clock.monotonic() < self._state.hold_off_until
            standing = self._stands_for_the_lease() and not held_off
            decision = election.decide(
                self._identity,
                record.spec if record is not None else None,
                self._observed_at,
                self._clock.monotonic(),
                self._clock.time(),
                self._timings,
                holder_dead=proof is not None,
                eligible=standing,
            )
            if decision.action is Action.FOLLOW:
                if self._leading.epoch is not None:
                    await self._leading.end(f"the lease is now held by {self.leader}")
                return _Outcome.FOLLOWING
            assert decision.terms is not None
            assert decision.epoch is not None
            try:
                written = await self._write(record, decision.terms)
            except LeaseConflict:
                self._log.debug("lost a race for lease %s; reading it", self._client.description)
                continue
            if proof is not None:
                self._log.info(
                    "Took lease %s from %s without waiting for it to expire: %s",
                    self._client.description,
                    holder,
                    proof,
                )
            await self._held(written, started, decision.epoch)
            return _Outcome.HOLDING
        raise LeaseConflict(f"lost the race for the lease {MAX_RACES} times in a row")

    async def _write(self, record: LeaseRecord | None, spec: LeaseSpec) -> LeaseRecord:
        self._state.uncertain = True
        try:
            if record is None:
                written = await self._call(lambda: self._client.create(spec))
            else:
                version = record.resource_version
                written = await self._call(lambda: self._client.replace(version, spec))
        except LeaseConflict:
            self._state.uncertain = False
            raise
        self._state.uncertain = False
        return written

    async def _held(self, written: LeaseRecord, started: float, epoch: Epoch) -> None:
        """Our write landed: we hold the lease for the term ``epoch``."""
        self._observe(written)
        if self._leading.epoch is not None and self._leading.epoch != epoch:
            await self._leading.end(f"the lease was acquired again with epoch {epoch}")
        self._renewed_at = started
        self._next_renew_at = started + self._timings.retry_period_s
        if self._leading.epoch is None and not self._stopping:
            self._leading.start(epoch)

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """One API call with a deadline on the injected clock; no answer in time
        is ``LeaseUnavailable``."""
        now = self._clock.monotonic()
        limit = self._timings.request_timeout_s
        if self._leading.epoch is not None and self._renewed_at is not None:
            limit = min(limit, election.renew_deadline_at(self._renewed_at, self._timings) - now)
            if limit <= 0:
                raise LeaseUnavailable("the renew deadline has passed")
        call = asyncio.ensure_future(request())
        try:
            answered = await wait_first(self._clock, limit, call)
        finally:
            if not call.done():
                call.cancel()
        if not answered:
            raise LeaseUnavailable(f"no answer from the API server within {limit:g} s")
        try:
            result = call.result()
        except LeaseConflict:
            self._state.contacted = True
            raise
        self._state.contacted = True
        return result

    def _observe(self, record: LeaseRecord | None) -> None:
        previous = self._observed
        holder = (record.spec.holder_identity or "") if record is not None else ""
        if self._witness is not None:
            self._witness.watch(holder if holder != self._identity else None, self._wake_up)
        if record is None:
            if previous is not None:
                self._observed = None
                self._observed_at = self._clock.monotonic()
            self._reported = ""
            return
        if previous is not None and previous.resource_version == record.resource_version:
            return
        self._observed = record
        self._observed_at = self._clock.monotonic()
        if holder == self._reported:
            return
        self._reported = holder
        if holder:
            self._log.info("The cluster has a new leader: %s", holder)
            if self._on_new_leader is not None:
                try:
                    self._on_new_leader(holder)
                except Exception:
                    self._log.exception("on_new_leader(%r) failed", holder)

    def _failed(self, error: Exception, *, unexpected: bool = False) -> None:
        """Log a failed attempt: every one while leading, else the first of a run
        of failures (the rest at DEBUG; recovery is logged at INFO)."""
        self._state.failures += 1
        leading = self._leading.epoch is not None
        first = self._state.failures == 1
        level = logging.WARNING if leading or first else logging.DEBUG
        if unexpected and first:
            level = logging.ERROR
        self._log.log(
            level,
            "%s lease %s failed: %s",
            "Renewing" if leading else "Reading or acquiring",
            self._client.description,
            str(error) or type(error).__name__,
            exc_info=error if unexpected and first else None,
        )

    # -- leading ------------------------------------------------------------------------

    def _stands_for_the_lease(self) -> bool:
        standing = self._leading.epoch is not None or self._eligible is None or self._eligible()
        if standing != self._standing:
            self._standing = standing
            why = "again" if standing else "no longer: this pod cannot do a leader's work"
            self._log.info("Standing for lease %s %s", self._client.description, why)
        return standing

    async def _give_up(self, failure: BaseException) -> None:
        t = self._timings
        if isinstance(failure, StepDown):
            self._log.warning("Giving the lease up so another pod leads: %s", failure)
            hold_off_s = t.lease_duration_s
        else:
            self._log.error(
                "The leading task failed; giving the lease up so another pod leads",
                exc_info=failure,
            )
            hold_off_s = t.retry_period_s
        await self._leading.end("the leading task failed")
        await self._release()
        hold_off = election.jittered(hold_off_s, t.jitter_factor, self._rng.random())
        self._state.hold_off_until = self._clock.monotonic() + hold_off

    async def _release(self) -> None:
        """Give the lease back if we hold it: holder "", 1 s, transitions kept."""
        try:
            record = self._observed
            if self._state.uncertain:  # a write of ours may have landed unseen
                record = await self._call(self._client.get)
                self._observe(record)
            for _ in range(MAX_RACES):
                if record is None or record.spec.holder_identity != self._identity:
                    return
                terms = election.release_terms(record.spec, self._clock.time())
                try:
                    written = await self._write(record, terms)
                except LeaseConflict:
                    record = await self._call(self._client.get)
                    self._observe(record)
                    continue
                self._observe(written)
                self._log.info("Released lease %s", self._client.description)
                return
        except (LeaseUnavailable, LeaseConflict, LeaseForbidden) as error:
            self._log.warning(
                "Could not release lease %s (others take over when it expires): %s",
                self._client.description,
                error,
            )
