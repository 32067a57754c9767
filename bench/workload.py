"""Synthetic inputs shared by the benchmarks (seeded, so runs are comparable)."""

from __future__ import annotations

import random

from aggregator.core.synthetic import CrashEventGenerator

BASE_TS = 1_763_798_400


def messages(count: int, *, seconds: int = 10, seed: int = 7) -> list[bytes]:
    generator = CrashEventGenerator(random.Random(seed), bad_fraction=0.0, apps=200)
    return [generator.message(BASE_TS + seconds * i / count) for i in range(count)]
