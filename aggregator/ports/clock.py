"""Time, injected: wall-clock for timestamps, monotonic for every duration."""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock epoch seconds (timestamps shown to people, record times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; the only one used for expiry."""
        ...

    async def sleep(self, seconds: float) -> None: ...
