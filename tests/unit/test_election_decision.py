"""The election decision as tables: what to write, given a record and the clocks."""

from __future__ import annotations

import pytest

from aggregator.core.election import (
    EXPIRY_SPREAD,
    Action,
    ElectionTimings,
    LeaseSpec,
    check_lease_timings,
    decide,
    follower_wait,
    jittered,
    make_identity,
    release_terms,
    renew_deadline_at,
    watchdog_healthy,
    within_renew_deadline,
)

T = ElectionTimings()
WALL = 1_700_000_500.0
ME = "pod-a_x1"
OTHER = "pod-b_y2"


def lease(
    holder: str | None,
    *,
    duration: int = 15,
    transitions: int = 3,
    acquired: float | None = 1_700_000_000.0,
    renewed: float | None = 1_700_000_400.0,
) -> LeaseSpec:
    return LeaseSpec(holder, duration, acquired, renewed, transitions)


# -- timings -------------------------------------------------------------------------


def test_default_timings_are_client_go_s() -> None:
    assert (T.lease_duration_s, T.renew_deadline_s, T.retry_period_s) == (15.0, 10.0, 2.0)
    assert T.jitter_factor == 1.2
    assert T.lease_duration_seconds == 15
    assert T.request_timeout_s == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"lease_duration_s": 10.0},
            r"lease_duration_s \(10\) must be greater than renew_deadline_s",
        ),
        (
            {"renew_deadline_s": 16.0},
            r"lease_duration_s \(15\) must be greater than renew_deadline_s",
        ),
        (
            {"retry_period_s": 9.0},
            r"renew_deadline_s \(10\) must be greater than 1.2 x retry_period_s \(9\)",
        ),
        ({"retry_period_s": 0.0}, r"retry_period_s \(0\) must be a positive number"),
        ({"lease_duration_s": -1.0}, r"lease_duration_s \(-1\) must be a positive number"),
        ({"renew_deadline_s": float("nan")}, r"renew_deadline_s \(nan\) must be a positive"),
        ({"jitter_factor": -0.5}, r"jitter factor \(-0.5\) must be a number >= 0"),
        (
            {"jitter_factor": 5.0},
            r"renew_deadline_s \(10\) must be greater than 5 x retry_period_s",
        ),
    ],
)
def test_bad_timings_raise_naming_the_value(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ElectionTimings(**kwargs)


def test_timing_names_can_be_the_settings_variables() -> None:
    names = ("AGG_LEASE_DURATION_SECONDS", "AGG_RENEW_DEADLINE_SECONDS", "AGG_RETRY_PERIOD_SECONDS")
    with pytest.raises(
        ValueError,
        match=(
            r"^AGG_LEASE_DURATION_SECONDS \(5\) must be greater than "
            r"AGG_RENEW_DEADLINE_SECONDS \(10\)$"
        ),
    ):
        check_lease_timings(5, 10, 2, names=names)


def test_fractional_lease_duration_is_written_rounded_up() -> None:
    timings = ElectionTimings(lease_duration_s=6.5, renew_deadline_s=4.0, retry_period_s=1.0)
    assert timings.lease_duration_seconds == 7
    assert timings.request_timeout_s == 2.0
    fast = ElectionTimings(lease_duration_s=1.5, renew_deadline_s=1.0, retry_period_s=0.5)
    assert fast.request_timeout_s == 1.0


# -- identity ------------------------------------------------------------------------


def test_identity_is_pod_name_underscore_suffix() -> None:
    assert make_identity("aggregator-7d9c-x2b", "k3f9q") == "aggregator-7d9c-x2b_k3f9q"


@pytest.mark.parametrize(("pod", "suffix"), [("", "abc"), ("pod", ""), ("  ", "abc")])
def test_identity_parts_cannot_be_empty(pod: str, suffix: str) -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        make_identity(pod, suffix)


# -- the decision ------------------------------------------------------------------------

OBSERVED_AT = 100.0


@pytest.mark.parametrize(
    ("record", "now", "action", "epoch"),
    [
        # Absent: create it, first term.
        (None, 100.0, Action.ACQUIRE, 0),
        # Ours: renew, whatever the time, same epoch.
        (lease(ME), 100.0, Action.RENEW, 3),
        (lease(ME), 500.0, Action.RENEW, 3),
        # Someone else's, not expired by our observation: follow.
        (lease(OTHER), 100.0, Action.FOLLOW, None),
        (lease(OTHER), 114.999, Action.FOLLOW, None),
        # Expired exactly lease_duration after we saw it change: take over.
        (lease(OTHER), 115.0, Action.ACQUIRE, 4),
        (lease(OTHER), 300.0, Action.ACQUIRE, 4),
        # The record's duration counts, not ours.
        (lease(OTHER, duration=40), 139.0, Action.FOLLOW, None),
        (lease(OTHER, duration=40), 140.0, Action.ACQUIRE, 4),
        # Released ("") or never held (None): take it at once, one more transition.
        (lease("", duration=1), 100.0, Action.ACQUIRE, 4),
        (lease(None, transitions=0), 100.0, Action.ACQUIRE, 1),
    ],
)
def test_decide(record: LeaseSpec | None, now: float, action: Action, epoch: int | None) -> None:
    decision = decide(ME, record, OBSERVED_AT, now, WALL, T)
    assert decision.action is action
    assert decision.epoch == epoch
    if action is Action.FOLLOW:
        assert decision.terms is None
        assert record is not None
        assert decision.expires_at == OBSERVED_AT + record.lease_duration_seconds
    else:
        assert decision.terms is not None
        assert decision.terms.holder_identity == ME
        assert decision.terms.lease_transitions == epoch
        assert decision.terms.lease_duration_seconds == 15
        assert decision.terms.renew_time == WALL
        assert decision.expires_at is None


@pytest.mark.parametrize(
    ("record", "expiry"),
    [
        (None, None),
        (lease(ME), OBSERVED_AT + 15),
        (lease(OTHER), OBSERVED_AT + 15),
        (lease("", duration=1), None),
        (lease(None, transitions=0), None),
    ],
)
def test_a_process_not_eligible_only_follows(
    record: LeaseSpec | None, expiry: float | None
) -> None:
    # Expired, released, absent or even ours: whatever it would write, it writes nothing.
    for now in (100.0, 500.0):
        decision = decide(ME, record, OBSERVED_AT, now, WALL, T, eligible=False, holder_dead=True)
        assert decision.action is Action.FOLLOW
        assert decision.terms is None
        assert decision.epoch is None
        assert decision.expires_at == expiry


def test_acquire_stamps_acquire_time_renew_keeps_it() -> None:
    taken = decide(ME, lease(OTHER), OBSERVED_AT, 200.0, WALL, T).terms
    assert taken == LeaseSpec(ME, 15, WALL, WALL, 4)
    created = decide(ME, None, 0.0, 0.0, WALL, T).terms
    assert created == LeaseSpec(ME, 15, WALL, WALL, 0)
    mine = lease(ME, duration=15, transitions=7, acquired=1_700_000_001.0)
    renewed = decide(ME, mine, OBSERVED_AT, 101.0, WALL, T).terms
    assert renewed == LeaseSpec(ME, 15, 1_700_000_001.0, WALL, 7)


def test_renew_fills_a_missing_acquire_time_and_writes_our_duration() -> None:
    mine = lease(ME, duration=3, acquired=None)
    renewed = decide(ME, mine, OBSERVED_AT, 101.0, WALL, T).terms
    assert renewed is not None
    assert renewed.acquire_time == WALL
    assert renewed.lease_duration_seconds == 15


@pytest.mark.parametrize("wall_now", [WALL, WALL + 3600.0, WALL - 86_400.0, 0.0])
def test_wall_clock_never_decides(wall_now: float) -> None:
    """Another node's renewTime (even far in the past or future of our wall clock)
    does not matter: only the monotonic time since we saw the change does."""
    stale = lease(OTHER, renewed=WALL - 10_000.0)
    future = lease(OTHER, renewed=WALL + 10_000.0)
    for record in (stale, future):
        assert decide(ME, record, OBSERVED_AT, 114.0, wall_now, T).action is Action.FOLLOW
        assert decide(ME, record, OBSERVED_AT, 115.0, wall_now, T).action is Action.ACQUIRE


def test_release_keeps_transitions_and_clears_the_holder() -> None:
    mine = lease(ME, transitions=9)
    released = release_terms(mine, WALL)
    assert released.holder_identity == ""
    assert released.lease_duration_seconds == 1
    assert released.lease_transitions == 9
    # The next holder's epoch is higher than the released one's.
    assert decide(OTHER, released, OBSERVED_AT, OBSERVED_AT, WALL, T).epoch == 10


# -- waiting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "expected"),
    [(0.0, 2.0), (0.5, 3.2), (0.999, 2.0 * (1 + 0.999 * 1.2))],
)
def test_jittered(unit: float, expected: float) -> None:
    assert jittered(2.0, 1.2, unit) == pytest.approx(expected)


@pytest.mark.parametrize("unit", [-0.1, 1.0, 2.0])
def test_jittered_wants_a_unit_random(unit: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        jittered(2.0, 1.2, unit)


@pytest.mark.parametrize(
    ("unit", "now", "expiry", "expected"),
    [
        (0.5, 0.0, None, 3.2),  # nothing to expire: jittered retry period
        (0.5, 0.0, 100.0, 3.2),  # expiry far away: jittered retry period
        (0.0, 99.0, 100.0, 1.0),  # expiry sooner: wake at expiry
        (0.5, 99.0, 100.0, 1.0 + 0.5 * EXPIRY_SPREAD * 2.0),  # ... spread a little
        (0.5, 101.0, 100.0, 0.0),  # already expired: at once
    ],
)
def test_follower_wait(unit: float, now: float, expiry: float | None, expected: float) -> None:
    assert follower_wait(T, unit, now, expiry) == pytest.approx(expected)


def test_follower_wait_never_exceeds_the_jittered_bound() -> None:
    for step in range(100):
        unit = step / 100
        assert 0.0 <= follower_wait(T, unit, 0.0, 1.0) <= 2.0 * (1 + 1.2 * unit)


# -- the leader's own deadlines -----------------------------------------------------------


def test_renew_deadline_is_before_anyone_can_take_over() -> None:
    renewed_at = 50.0
    assert renew_deadline_at(renewed_at, T) == 60.0
    assert within_renew_deadline(renewed_at, 59.999, T)
    assert not within_renew_deadline(renewed_at, 60.0, T)
    # Others observed that write no earlier than it was sent: they wait until >= 65.
    earliest_takeover = renewed_at + T.lease_duration_seconds
    assert renew_deadline_at(renewed_at, T) < earliest_takeover


def test_watchdog_allows_lease_duration_plus_twenty_seconds() -> None:
    assert watchdog_healthy(0.0, 35.0, T)
    assert not watchdog_healthy(0.0, 35.001, T)
