"""The exactness tests' stream plan (tests/support/stream.py) against the
decoding rules, without servers: every message gets the outcome planned for it,
so a failure of the real-server exactness tests is about counting, not the plan."""

from __future__ import annotations

from aggregator.core.decode import Decoder
from aggregator.core.events import Event, EventSchema
from tests.support.stream import MAX_MESSAGE_BYTES, REASONS, StreamMaker


def test_the_plan_agrees_with_the_decoding_rules() -> None:
    decoder = Decoder(EventSchema())
    maker = StreamMaker(7)
    seen = set()
    for i in range(5000):
        planned = maker.make(1_800_000_000 + i * 0.0137)
        if len(planned.value) > MAX_MESSAGE_BYTES:
            assert planned.reason == "too_large"
        else:
            outcome = decoder.decode(planned.value)
            if planned.event is None:
                assert str(outcome) == planned.reason, planned
            else:
                assert isinstance(outcome, Event), (planned, outcome)
                expected = planned.event
                assert (outcome.keys, outcome.value, outcome.distinct) == (
                    expected.keys, expected.value, expected.distinct,
                )  # fmt: skip
                assert int(outcome.ts // 1) == expected.bucket
        seen.add(planned.reason)
    assert seen == {None, *REASONS}
