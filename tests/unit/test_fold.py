"""The fold's inline fast path against the spec: for any message, ``MapFolder.fold``
gives the outcome ``Decoder.decode`` implies, and the rolled-up partial equals
per-event aggregates computed the obvious way (one ``Agg`` update per dimension)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import accumulate, native
from aggregator.core.accumulate import SKIPPED, FoldSettings, MapFolder, PartitionState
from aggregator.core.decode import Decoder
from aggregator.core.events import Event, EventSchema, Reject, Timeliness
from aggregator.core.partial import Partial
from tests.support.oracle import brute_partial
from tests.unit.test_properties import _close  # equal but for float sums' last bits

SCHEMA = EventSchema()
ARRIVED = 1_000_000.0
SETTINGS = FoldSettings(SCHEMA, 2, 60, 10.0, 5.0, 1000)

_missing = object()
times = st.one_of(
    st.floats(min_value=ARRIVED - 100, max_value=ARRIVED + 20, allow_nan=False),
    st.integers(min_value=int(ARRIVED) - 100, max_value=int(ARRIVED) + 20),
    st.just(10**400),
    st.sampled_from(["1970-01-12T13:46:40Z", "1970-01-12T13:46:41.5+00:00", "later", ""]),
    st.none(),
    st.booleans(),
    st.just(_missing),
)
keys = st.one_of(
    st.sampled_from(["a", "b", "é", ""]), st.none(), st.just(_missing), st.just(3), st.just([])
)
values = st.one_of(
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.just(0),
    st.just(1e-12),
    st.none(),
    st.just(_missing),
    st.just(-1.0),
    st.just("12"),
    st.just(True),
)
devices = st.one_of(
    st.sampled_from([f"dev{i}" for i in range(30)]), st.none(), st.just(_missing), st.just(7)
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        return b"x" * 1001  # over max_message_bytes
    fields: dict[str, Any] = {}
    for name, strategy in (
        ("ts", times),
        ("app", keys),
        ("platform", keys),
        ("crash_type", keys),
        ("duration_ms", values),
        ("device_id", devices),
    ):
        value = draw(strategy)
        if value is not _missing:
            fields[name] = value
    text = orjson.dumps(fields) if "ts" not in fields or fields["ts"] != 10**400 else None
    if text is None:  # orjson refuses integers beyond 64 bits; JSON does not
        rest = orjson.dumps({k: v for k, v in fields.items() if k != "ts"})
        text = b'{"ts":' + b"1" + b"0" * 400 + (b"," + rest[1:] if rest != b"{}" else b"}")
    return text


def expected_outcome(message: bytes) -> Reject | Timeliness | Event:
    if len(message) > SETTINGS.max_message_bytes:
        return Reject.TOO_LARGE
    event = Decoder(SCHEMA).decode(message)
    if not isinstance(event, Event):
        return event
    if event.ts < ARRIVED - SETTINGS.window_seconds - SETTINGS.grace_seconds:
        return Timeliness.LATE
    if event.ts > ARRIVED + SETTINGS.future_seconds:
        return Timeliness.FUTURE
    return event


def brute_force(events: list[Event], bucket: int) -> Partial:
    return brute_partial(bucket, events, len(SCHEMA.dimensions))


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(messages(), max_size=60), seed=st.integers(0, 2**32))
def test_fold_matches_decode_and_per_event_aggregates(batch: list[bytes], seed: int) -> None:
    rng = random.Random(seed)
    folder = MapFolder(SETTINGS)
    counted: dict[int, list[Event]] = {}
    drops: dict[int, dict[str, int]] = {}
    for offset, message in enumerate(batch):
        outcome = folder.fold(0, offset, ARRIVED, message)
        want = expected_outcome(message)
        if isinstance(want, Event):
            assert outcome is None
            counted.setdefault(int(want.ts // 2) * 2, []).append(want)
        else:
            assert outcome == want
            reasons = drops.setdefault(int(ARRIVED // 2) * 2, {})
            reasons[want.value] = reasons.get(want.value, 0) + 1
        if rng.random() < 0.2:
            folder.partition(0).roll_up()
    partials = {p.bucket: p for p in folder.partition(0).roll_up()}
    assert set(partials) == set(counted) | set(drops)
    for bucket, partial in partials.items():
        expected = brute_force(counted.get(bucket, []), bucket)
        expected.dropped = drops.get(bucket, {})
        assert _close(partial, expected)
        assert partial.offset == max(
            offset
            for offset, message in enumerate(batch)
            if int(_bucket_of(message) // 2) * 2 == bucket
        )


def _bucket_of(message: bytes) -> float:
    want = expected_outcome(message)
    return want.ts if isinstance(want, Event) else ARRIVED


def test_replayed_messages_are_skipped_by_the_fast_path() -> None:
    folder = MapFolder(SETTINGS)
    message = b'{"ts": 1000000, "app": "a", "duration_ms": 3, "device_id": "d"}'
    assert folder.fold(0, 5, ARRIVED, message) is None
    (partial,) = folder.partition(0).roll_up()
    assert folder.fold(0, 5, ARRIVED, message) == SKIPPED
    assert folder.fold(0, 6, ARRIVED, message) is None
    folder.partition(0).roll_up()
    assert partial.total.count == 2


def test_an_integer_time_beyond_the_float_range_is_invalid_not_a_crash() -> None:
    message = b'{"ts": 1' + b"0" * 400 + b"}"
    assert Decoder(SCHEMA).decode(message) == Reject.INVALID_TS
    assert MapFolder(SETTINGS).fold(0, 0, ARRIVED, message) == Reject.INVALID_TS


def test_partition_state_add_event_equals_fold() -> None:
    """The property tests drive ``add_event``; it must fold as ``fold`` does."""
    events = [
        Event(ARRIVED, ("a", "x", "unknown"), 12.5, "d1"),
        Event(ARRIVED + 0.5, ("a", "y", "unknown"), None, "d2"),
        Event(ARRIVED + 1.0, ("b", "x", "unknown"), 0.0, None),
        Event(ARRIVED + 1.5, ("a", "x", "unknown"), 1e-12, "d1"),
        # keys seen in one combination only, several events each
        *(Event(ARRIVED, ("c", "z", "oom"), float(i), f"d{i}") for i in range(5)),
        *(Event(ARRIVED, ("c", "z", "oom"), None, None) for _ in range(2)),
        *(Event(ARRIVED, ("d", "w", "anr"), None, f"d{i}") for i in range(3)),
    ]
    state = PartitionState(3)
    for offset, event in enumerate(events):
        state.add_event(int(ARRIVED), offset, event)
    (partial,) = state.roll_up()
    assert _close(partial, brute_force(events, int(ARRIVED)))
    assert partial.offset == len(events) - 1


def test_the_buffer_merges_itself_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays bounded between flushes: past ``BUFFER_LIMIT`` buffered events
    a partition merges them into its partials, and a roll-up still returns them all."""
    monkeypatch.setattr(accumulate, "BUFFER_LIMIT", 10)
    folder = MapFolder(SETTINGS)
    message = b'{"ts": 1000000, "app": "a", "duration_ms": 3, "device_id": "d"}'
    for offset in range(25):
        assert folder.fold(0, offset, ARRIVED, message) is None
    state = folder.partition(0)
    assert state.buffered == 5
    assert state.partials[int(ARRIVED)].total.count == 20
    (partial,) = state.roll_up()
    assert partial.total.count == 25
    assert partial.by[0]["a"].vcount == 25
    assert partial.offset == 24


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"not json", Reject.INVALID_JSON),
        (orjson.dumps({"ts": ARRIVED - 1000, "app": "a"}), Timeliness.LATE),
        (orjson.dumps({"ts": ARRIVED + 100, "app": "a"}), Timeliness.FUTURE),
    ],
)
@pytest.mark.parametrize("compiled", [True, False], ids=["native", "python"])
def test_a_replayed_drop_at_exactly_the_stored_offset_is_skipped(
    message: bytes, reason: Reject | Timeliness, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped message is filed in its arrival bucket's partial and raises that
    partial's offset like a counted one, so after a crash the replay must skip it
    at that offset (``PartitionState.counted``), not count the drop twice."""
    if not compiled:
        monkeypatch.setattr(native, "NATIVE", None)
    counted = b'{"ts": 1000000, "app": "a", "duration_ms": 3, "device_id": "d"}'
    first = MapFolder(SETTINGS)
    assert first.fold(0, 5, ARRIVED, counted) is None
    assert first.fold(0, 6, ARRIVED, message) == reason
    (stored,) = first.partition(0).roll_up()
    assert (stored.offset, stored.dropped) == (6, {reason.value: 1})

    # A restarted pod loads the stored partial and reads again from before it.
    replay = MapFolder(SETTINGS)
    replay.partition(0).load([Partial.from_wire(orjson.loads(orjson.dumps(stored.to_wire())))])
    assert replay.fold(0, 5, ARRIVED, counted) == SKIPPED
    assert replay.fold(0, 6, ARRIVED, message) == SKIPPED
    assert replay.fold(0, 7, ARRIVED, message) == reason  # a new message still counts
    (partial,) = replay.partition(0).roll_up()  # the delta since the load
    assert (partial.offset, partial.total.count, partial.dropped) == (7, 0, {reason.value: 1})
