"""The beats that the flush and the tick share: a table."""

from __future__ import annotations

import pytest

from aggregator.core.cadence import next_beat


@pytest.mark.parametrize(
    ("now", "period", "offset", "beat"),
    [
        (10.3, 1.0, 0.0, 11.0),
        (10.0, 1.0, 0.0, 11.0),  # strictly after: a beat just taken is not due again
        (10.02, 1.0, 0.03, 10.03),
        (10.03, 1.0, 0.03, 11.03),
        (10.26, 0.5, 0.0, 10.5),
        (10.5, 0.5, 0.0, 11.0),
        (1_700_000_000.999, 1.0, 0.1, 1_700_000_001.1),
    ],
)
def test_next_beat(now: float, period: float, offset: float, beat: float) -> None:
    assert next_beat(now, period, offset) == pytest.approx(beat)


def test_a_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_beat(10.0, 0.0)
