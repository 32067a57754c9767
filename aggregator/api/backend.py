"""What the HTTP layer needs from the process behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from aggregator.services.pod import Pod


class Backend(Protocol):
    def front(self) -> Pod | None:
        """The pod this HTTP server speaks for (in the demo: the first one alive)."""
        ...

    def pods(self) -> Sequence[Pod]:
        """Every pod of this process (one in production, several in the demo)."""
        ...


class DemoControls(Protocol):
    async def kill(self, name: str) -> None: ...

    async def stop(self, name: str) -> None: ...

    async def restart(self, name: str) -> None: ...

    def describe(self) -> list[dict[str, object]]: ...
