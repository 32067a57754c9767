"""``MapFolder.fold_many`` is ``MapFolder.fold`` of each record in turn: for any batch
over several partitions, replays included, the same tallies, the same rejected
records with their reasons, the same next offsets and the same partials."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.core import accumulate
from aggregator.core.accumulate import SKIPPED, MapFolder
from tests.unit.test_fold import ARRIVED, SETTINGS, messages


@dataclass(slots=True)
class Record:
    partition: int
    offset: int
    timestamp: float
    value: bytes


@st.composite
def batches(draw: st.DrawFn) -> list[list[Record]]:
    """Consecutive batches of records of up to 3 partitions, offsets rising per
    partition, some of them read again (a replay after a rewind)."""
    out: list[list[Record]] = []
    next_offset = [0, 0, 0]
    for _ in range(draw(st.integers(1, 4))):
        batch: list[Record] = []
        for _ in range(draw(st.integers(0, 25))):
            partition = draw(st.integers(0, 2))
            if draw(st.integers(0, 9)) == 0:
                next_offset[partition] = max(0, next_offset[partition] - draw(st.integers(1, 5)))
            arrived = ARRIVED + draw(st.sampled_from([0.0, 0.5, 3.0]))
            batch.append(Record(partition, next_offset[partition], arrived, draw(messages())))
            next_offset[partition] += 1
        out.append(batch)
    return out


@settings(max_examples=300, deadline=None)
@given(batches=batches(), roll_up_between=st.booleans())
def test_fold_many_equals_fold_of_each_record(
    batches: list[list[Record]], roll_up_between: bool
) -> None:
    one, many = MapFolder(SETTINGS), MapFolder(SETTINGS)
    for batch in batches:
        counted = skipped = 0
        rejected: list[tuple[Record, str]] = []
        offsets: dict[int, int] = {}
        for record in batch:
            outcome = one.fold(record.partition, record.offset, record.timestamp, record.value)
            if outcome is None:
                counted += 1
            elif outcome == SKIPPED:
                skipped += 1
            else:
                rejected.append((record, str(outcome)))
            offsets[record.partition] = record.offset + 1
        read_to: dict[int, int] = {}
        assert many.fold_many(batch, read_to) == (counted, skipped, rejected)
        assert read_to == offsets
        if roll_up_between:
            for folder in (one, many):
                for state in folder.partitions.values():
                    state.stored([p.bucket for p in state.roll_up()])
    assert one.partitions.keys() == many.partitions.keys()
    for partition, state in one.partitions.items():
        assert state.roll_up() == many.partitions[partition].roll_up()
        assert state.partials == many.partitions[partition].partials


def test_fold_many_merges_a_full_buffer_as_fold_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accumulate, "BUFFER_LIMIT", 3)
    message = b'{"ts": %d, "app": "a", "duration_ms": 2.0, "device_id": "d"}' % ARRIVED
    folder = MapFolder(SETTINGS)
    records = [Record(0, offset, ARRIVED, message) for offset in range(7)]
    assert folder.fold_many(records, {}) == (7, 0, [])
    state = folder.partitions[0]
    assert state.buffered == 1  # merged at 3 and at 6
    assert not state.dirty.isdisjoint({int(ARRIVED) // 2 * 2})
    assert folder.fold_many(records[:6], {}) == (0, 6, [])  # merged: replays are skipped
