"""``bench.map_phases`` folds every event it builds, in fetches shaped as the
suite's (a run per partition), and times each phase."""

from __future__ import annotations

import pytest

from bench import map_phases


def test_every_event_goes_through_every_phase() -> None:
    batches = map_phases.fetches(6_000)
    assert sum(len(run) for batch in batches for run in batch.values()) == 6_000
    assert all(len(batch) == map_phases.PARTITIONS for batch in batches)
    phases = map_phases.measure(batches)
    assert phases.events == 6_000  # every one counted
    assert min(phases.records, phases.fold, phases.roll_up, phases.encode) >= 0
    assert phases.total > 0


def test_the_command_prints_each_phase(capsys: pytest.CaptureFixture[str]) -> None:
    assert map_phases.main(["--events", "3000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for phase in ("KafkaRecord", "fold", "roll-up", "encode", "total", "events/s", "python"):
        assert phase in out
