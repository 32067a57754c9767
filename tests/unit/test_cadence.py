"""The beats that the flush and the tick share: a table."""

from __future__ import annotations

import pytest

from aggregator.core.cadence import TickDelay, next_beat


@pytest.mark.parametrize(
    ("now", "period", "offset", "beat"),
    [
        (10.3, 1.0, 0.0, 11.0),
        (10.0, 1.0, 0.0, 11.0),  # strictly after: a beat just taken is not due again
        (10.02, 1.0, 0.03, 10.03),
        (10.03, 1.0, 0.03, 11.03),
        (10.26, 0.5, 0.0, 10.5),
        (10.5, 0.5, 0.0, 11.0),
        (1_700_000_000.999, 1.0, 0.03, 1_700_000_001.03),
    ],
)
def test_next_beat(now: float, period: float, offset: float, beat: float) -> None:
    assert next_beat(now, period, offset) == pytest.approx(beat)


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_beat(10.0, 0.0)


def test_the_delay_starts_at_its_ceiling_then_follows_the_landings() -> None:
    delay = TickDelay(0.25)
    assert delay.current() == 0.25
    delay.observe(None)  # no bucket closed at that second: nothing learned
    assert delay.current() == 0.25
    for _ in range(60):
        delay.observe(0.02)
    assert delay.current() == pytest.approx(0.03)  # the landing plus 10 ms
    delay.observe(0.1)  # one slow second: the next minute waits for such a one
    for _ in range(59):
        delay.observe(0.02)
    assert delay.current() == pytest.approx(0.11)
    delay.observe(0.02)  # a minute later it is forgotten
    assert delay.current() == pytest.approx(0.03)
    delay.observe(0.5)  # slower than the ceiling: the ceiling
    assert delay.current() == 0.25


def test_the_delay_never_goes_below_the_floor_nor_above_a_small_ceiling() -> None:
    fast = TickDelay(0.25)
    fast.observe(0.0)
    assert fast.current() == pytest.approx(0.01)
    fixed = TickDelay(0.005)  # a ceiling below the floor: the ceiling
    fixed.observe(0.0)
    assert fixed.current() == 0.005
    with pytest.raises(ValueError, match="negative"):
        TickDelay(-1.0)
