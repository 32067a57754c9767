"""The C extension folds and rolls up exactly as the Python code it replaces.

``_native.fold_run`` and ``_native.add_combos`` are compared with
``MapFolder.fold_python`` and ``combos.add_combos_python`` on generated input:
the same outcomes, the same partials, bit for bit (float sums are added in the
same order).  In CI the extension must have been built; locally a missing one
skips these tests and says how to build it.
"""

from __future__ import annotations

import gc
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import accumulate, buckets, combos, distinct, native
from aggregator.core.accumulate import MapFolder
from aggregator.core.decode import epoch_seconds
from aggregator.core.partial import Agg, Partial
from tests.fixtures.requirements import in_ci
from tests.unit.test_fold import ARRIVED, SETTINGS
from tests.unit.test_fold_many import Record, batches


@pytest.fixture(autouse=True)
def built() -> None:
    if native.NATIVE is None:
        message = (
            "the C extension aggregator/core/_native.c is not built "
            "(pip install -e . with a C compiler; see hatch_build.py)"
        )
        if in_ci():
            pytest.fail(f"CI requires it: {message}", pytrace=False)
        pytest.skip(message)


@contextmanager
def python_only() -> Iterator[None]:
    saved = native.NATIVE
    native.NATIVE = None
    try:
        yield
    finally:
        native.NATIVE = saved


def folded(folder: MapFolder, batch: list[Record], *, compiled: bool) -> object:
    read_to: dict[int, int] = {}
    if compiled:
        outcome = folder.fold_many(batch, read_to)
    else:
        with python_only():
            outcome = folder.fold_many(batch, read_to)
    return outcome, read_to


def rolled_up(folder: MapFolder, *, compiled: bool) -> dict[int, list[Partial]]:
    if compiled:
        return {p: state.roll_up() for p, state in folder.partitions.items()}
    with python_only():
        return {p: state.roll_up() for p, state in folder.partitions.items()}


@st.composite
def times_and_buckets(draw: st.DrawFn) -> tuple[float, int]:
    bucket_seconds = draw(st.one_of(st.sampled_from([1, 2, 3, 10, 60]), st.integers(1, 10**6)))
    boundary = float(draw(st.integers(-(10**10), 10**10)) * bucket_seconds)
    ts = draw(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.floats(min_value=-2e9, max_value=2e9),
            # at a bucket boundary and one ulp either side (where ts / bs rounds)
            st.sampled_from(
                [boundary, math.nextafter(boundary, -math.inf), math.nextafter(boundary, math.inf)]
            ),
        )
    )
    return ts, bucket_seconds


@settings(max_examples=2000, deadline=None)
@given(case=times_and_buckets())
def test_the_c_bucket_equals_the_one_python_definition(case: tuple[float, int]) -> None:
    ts, bucket_seconds = case
    compiled = native.NATIVE
    assert compiled is not None
    got = compiled.bucket_of(ts, bucket_seconds)
    if got is None:  # left to Python: only where a long long cannot hold it exactly
        assert abs(ts) > 8.0e15
    else:
        assert got == buckets.bucket_of(ts, bucket_seconds)


@settings(max_examples=300, deadline=None)
@given(batches=batches(), limit=st.sampled_from([3, 7, 65_536]), roll_up_between=st.booleans())
def test_the_compiled_fold_and_roll_up_equal_pythons(
    batches: list[list[Record]], limit: int, roll_up_between: bool
) -> None:
    saved_limit = accumulate.BUFFER_LIMIT
    accumulate.BUFFER_LIMIT = limit  # merges mid-run, between the C calls
    try:
        fast, slow = MapFolder(SETTINGS), MapFolder(SETTINGS)
        for batch in batches:
            assert folded(fast, batch, compiled=True) == folded(slow, batch, compiled=False)
            for folder in (fast, slow):
                assert all(state.buffered < limit for state in folder.partitions.values())
            if roll_up_between:
                mine = rolled_up(fast, compiled=True)
                assert mine == rolled_up(slow, compiled=False)
                for folder, done in ((fast, mine), (slow, mine)):
                    for partition, partials in done.items():
                        folder.partitions[partition].stored([p.bucket for p in partials])
        assert rolled_up(fast, compiled=True) == rolled_up(slow, compiled=False)
        for partition, state in fast.partitions.items():
            assert state.partials == slow.partitions[partition].partials
    finally:
        accumulate.BUFFER_LIMIT = saved_limit


values = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=1e12, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e-12, 1e-9, 5e-10, 3.5, 3.5000000000000004]),
)
devices = st.one_of(st.none(), st.sampled_from(["d1", "d2", "é", ""]), st.text(max_size=12))
keys = st.sampled_from(["a", "b", "unknown", "é"])


@st.composite
def buffers(draw: st.DrawFn) -> dict[tuple[str, ...], list[float | str | None]]:
    out: dict[tuple[str, ...], list[float | str | None]] = {}
    for _ in range(draw(st.integers(0, 12))):
        combo = out.setdefault(tuple(draw(keys) for _ in range(3)), [])
        for _ in range(draw(st.integers(1, 6))):
            combo += [draw(values), draw(devices)]
    return out


@st.composite
def partials(draw: st.DrawFn) -> Partial:
    """A partial that may already hold aggregates (a bucket rolled up before)."""
    partial = Partial(10, 3, offset=draw(st.integers(-1, 50)))
    before = draw(buffers())
    with python_only():
        combos.add_combos(partial, before)
    return partial


def add(partial: Partial, buffer: dict[tuple[str, ...], list[float | str | None]]) -> bool:
    compiled = native.NATIVE
    assert compiled is not None
    return compiled.add_combos(combos.ROLL_UP, partial, buffer)


@settings(max_examples=400, deadline=None)
@given(start=partials(), buffer=buffers())
def test_add_combos_in_c_equals_python_bit_for_bit(
    start: Partial, buffer: dict[tuple[str, ...], list[float | str | None]]
) -> None:
    mine, theirs = start.copy(), start.copy()
    assert add(mine, buffer)
    combos.add_combos_python(theirs, buffer)
    assert mine == theirs
    for agg_c, agg_py in zip(
        [mine.total, *(a for keys in mine.by for a in keys.values())],
        [theirs.total, *(a for keys in theirs.by for a in keys.values())],
        strict=True,
    ):
        assert agg_c.to_wire()[:5] == agg_py.to_wire()[:5]  # the floats, exactly
        assert str(agg_c.vsum) == str(agg_py.vsum)  # -0.0 and 0.0 apart too


@pytest.mark.parametrize(
    "odd",
    [
        {("a", "b", "c"): [1, "d"]},  # an int value
        {("a", "b", "c"): [1.0, 7]},  # a device that is no string
        {("a", "b"): [1.0, "d"]},  # keys of another dimension count
        {("a", "b", "c"): [1.0]},  # no device slot
    ],
)
def test_add_combos_leaves_what_it_does_not_take_to_python(
    odd: dict[tuple[str, ...], list[object]],
) -> None:
    partial = Partial(10, 3)
    assert not add(partial, odd)  # type: ignore[arg-type]
    assert partial == Partial(10, 3)  # nothing changed


def test_fold_run_stops_at_what_python_must_judge() -> None:
    compiled = native.NATIVE
    assert compiled is not None
    folder = MapFolder(SETTINGS)
    state = folder.partition(0)
    good = b'{"ts": %r, "app": "a"}' % ARRIVED
    run = [
        Record(0, 0, ARRIVED, good),
        Record(0, 1, ARRIVED, b"not json"),
        Record(0, 2, ARRIVED, good),
    ]
    assert compiled.fold_run(folder.fold_context, state, run, 0) == (1, 1, 0)
    assert state.buffered == 1
    assert folder.fold_many(run, {}) == (2, 0, [(run[1], "invalid_json")])


@st.composite
def replays(draw: st.DrawFn) -> list[list[Record]]:
    """Valid messages of a few buckets, read again and again from earlier offsets:
    where the skip rule (offset at or below the stored one) decides."""
    out: list[list[Record]] = []
    top = 0
    for _ in range(draw(st.integers(2, 5))):
        start = draw(st.integers(0, top))
        end = start + draw(st.integers(1, 12))
        batch = []
        for offset in range(start, end):
            ts = ARRIVED - draw(st.sampled_from([0.0, 0.5, 2.0, 3.9, 4.0]))
            value = draw(st.sampled_from([b"", b', "duration_ms": 1.5', b', "device_id": "d"']))
            message = b'{"ts": %r, "app": "a"%s}' % (ts, value)
            batch.append(Record(draw(st.integers(0, 1)), offset, ARRIVED, message))
        batch.sort(key=lambda record: record.partition)  # one run per partition
        out.append(batch)
        top = max(top, end)
    return out


@settings(max_examples=300, deadline=None)
@given(batches=replays())
def test_the_compiled_fold_skips_exactly_what_python_skips(batches: list[list[Record]]) -> None:
    fast, slow = MapFolder(SETTINGS), MapFolder(SETTINGS)
    for batch in batches:
        assert folded(fast, batch, compiled=True) == folded(slow, batch, compiled=False)
        for folder, compiled in ((fast, True), (slow, False)):
            for partition, partials in rolled_up(folder, compiled=compiled).items():
                folder.partitions[partition].stored([p.bucket for p in partials])
    for partition, state in fast.partitions.items():
        assert state.partials == slow.partitions[partition].partials


def test_a_replay_up_to_the_stored_offset_is_skipped_and_the_rest_counted() -> None:
    folder = MapFolder(SETTINGS)
    good = b'{"ts": %r, "app": "a"}' % ARRIVED
    assert folder.fold_many([Record(0, o, ARRIVED, good) for o in range(10)], {}) == (10, 0, [])
    folder.partition(0).roll_up()
    again = [Record(0, o, ARRIVED, good) for o in range(5, 13)]
    assert folder.fold_many(again, {}) == (3, 5, [])


def test_the_calls_keep_no_reference_to_what_they_are_given() -> None:
    """A C extension's usual leak: a reference taken and never given back."""
    compiled = native.NATIVE
    assert compiled is not None
    folder = MapFolder(SETTINGS)
    read, fields, unknown = folder._read, folder.decoder.fields, "unknown"
    run = [
        Record(0, o, ARRIVED, b'{"ts": %r, "app": "a%d", "device_id": "d%d", "duration_ms": %d.5}'
               % (ARRIVED, o % 3, o % 5, o))
        for o in range(40)
    ]  # fmt: skip
    context = native.FoldContext(read, fields, unknown, epoch_seconds, 70.0, 5.0, 2, 1000, 100)
    agg = Agg()
    agg.count, agg.vcount, agg.vsum, agg.vmin, agg.vmax = 10**12, 3, 2.5, 0.5, 1.5
    agg.hist, agg.regs = {-(10**11): 10**13}, {4000: 10**14}
    key = "app-" + "x" * 40
    aggs, too_big, not_aggs = {key: agg}, {key: Agg()}, {key: agg, "other": object()}
    too_big[key].count = 2**70
    watched = (
        *(read, fields, unknown, run, run[0], run[0].value, context),
        *(combos.ROLL_UP, Agg, distinct.register_and_rank),
        *(agg, agg.count, agg.vsum, agg.vmin, agg.hist, *agg.hist, *agg.hist.values(), agg.regs),
        *(key, aggs, too_big, too_big[key], not_aggs),
    )

    def once() -> None:
        state = accumulate.PartitionState(3)
        compiled.fold_run(context, state, run, 0)
        state.partials[int(ARRIVED)] = Partial(int(ARRIVED), 3, offset=20)
        again = accumulate.PartitionState(3)
        again.partials = state.partials
        compiled.fold_run(context, again, run, 0)
        for bucket, buffered in state.buffer.items():
            partial = Partial(bucket, 3)
            for _ in range(2):
                assert add(partial, buffered)
            assert not add(partial, {("a", "b", "c"): [1, "d"]})
        packed = compiled.aggs_to_msgpack(Agg, aggs)
        assert sys.getrefcount(packed) == 2  # ours, and getrefcount's argument
        assert compiled.aggs_to_msgpack(Agg, too_big) is None
        assert compiled.aggs_to_msgpack(Agg, not_aggs) is None  # type: ignore[arg-type]

    once()
    before = [sys.getrefcount(thing) for thing in watched]
    for _ in range(50):
        once()
    assert [sys.getrefcount(thing) for thing in watched] == before


def test_an_interrupt_while_decoding_is_not_swallowed() -> None:
    compiled = native.NATIVE
    assert compiled is not None

    def interrupted(message: bytes) -> None:
        raise KeyboardInterrupt

    state = accumulate.PartitionState(3)
    context = native.FoldContext(
        interrupted, ("d0", "d1", "d2"), "unknown", epoch_seconds, 70.0, 5.0, 2, 1000, 100
    )
    with pytest.raises(KeyboardInterrupt):
        compiled.fold_run(context, state, [Record(0, 0, ARRIVED, b"{}")], 0)


def test_integer_and_text_times_stay_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Producers that send whole seconds or RFC 3339 text must not fall back to
    the Python loop one record at a time; only the drop goes there."""
    handed_over: list[int] = []
    python_fold = MapFolder.fold_python

    def counting(self: MapFolder, records: list[Record], read_to: dict[int, int]) -> object:
        handed_over.append(len(records))
        return python_fold(self, records, read_to)

    monkeypatch.setattr(MapFolder, "fold_python", counting)
    whole = int(ARRIVED)
    run = [
        Record(0, 0, ARRIVED, b'{"ts": %d, "app": "a"}' % whole),
        Record(0, 1, ARRIVED, b'{"ts": "1970-01-12T13:46:40Z", "app": "b"}'),  # = ARRIVED
        Record(0, 2, ARRIVED, b'{"ts": "yesterday", "app": "c"}'),
        Record(0, 3, ARRIVED, b'{"ts": %d, "app": "a"}' % whole),
    ]
    assert MapFolder(SETTINGS).fold_many(run, {}) == (3, 0, [(run[2], "invalid_ts")])
    assert handed_over == [1]


def test_what_the_fold_and_roll_up_make_per_key_is_not_walked_by_the_collector() -> None:
    """Key tuples, value lists and each key's Agg hold only atoms and dicts of
    numbers: untracked, so a million of them cost young collections nothing."""
    folder = MapFolder(SETTINGS)
    run = [
        Record(0, o, ARRIVED, b'{"ts": %r, "app": "a%d", "device_id": "d%d", "duration_ms": %d.5}'
               % (ARRIVED, o % 7, o % 5, o))
        for o in range(40)
    ]  # fmt: skip
    folder.fold_many(run, {})
    state = folder.partition(0)
    for buffered in state.buffer.values():
        assert buffered
        assert not any(gc.is_tracked(keys) or gc.is_tracked(v) for keys, v in buffered.items())
    [partial] = state.roll_up()
    aggs = [agg for keys in partial.by for agg in keys.values()]
    assert len(aggs) == 7 + 1 + 1  # apps, and one key of each other dimension
    assert not any(map(gc.is_tracked, aggs))


class Holder(Agg):
    """An aggregate that starts out holding a container: it could be in a cycle."""

    __slots__ = ("extra",)

    def __init__(self) -> None:
        super().__init__()
        self.extra: list[object] = []


def test_an_aggregate_that_holds_a_tracked_object_stays_tracked() -> None:
    context = native.RollUpContext(
        agg_type=Holder,
        register_and_rank=distinct.register_and_rank,
        zero_bin=combos.ROLL_UP.zero_bin,
        min_indexable=combos.ROLL_UP.min_indexable,
        inv_log_gamma=combos.ROLL_UP.inv_log_gamma,
    )
    compiled = native.NATIVE
    assert compiled is not None
    partial = Partial(10, 3)
    assert compiled.add_combos(context, partial, {("a", "b", "c"): [1.0, "d"]})
    held = [agg for keys in partial.by for agg in keys.values()]
    assert held
    assert all(isinstance(agg, Holder) for agg in held)
    assert all(map(gc.is_tracked, held))
