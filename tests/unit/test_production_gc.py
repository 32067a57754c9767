"""``aggregator run`` tunes the garbage collector before it starts."""

from __future__ import annotations

import gc

import pytest

from aggregator.wiring import production
from aggregator.wiring.settings import Settings, load_settings


@pytest.fixture
def restored_gc() -> object:
    thresholds = gc.get_threshold()
    yield None
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_raises_the_thresholds_and_freezes_start_up_objects() -> None:
    production.tune_garbage_collector()
    assert gc.get_threshold() == production.GC_THRESHOLDS
    assert production.GC_THRESHOLDS[0] > 700  # CPython's default young threshold
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_run_tunes_before_starting_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []

    async def pod(settings: Settings) -> int:
        seen.append(gc.get_threshold())
        return 0

    monkeypatch.setattr(production, "_run", pod)
    assert production.run(load_settings()) == 0
    assert seen == [production.GC_THRESHOLDS]
