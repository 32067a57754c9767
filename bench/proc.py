"""Benchmark child processes: memory from /proc, and JSON-lines children."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MIB = 1024


def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS`` / ``VmHWM``-style field of /proc/PID/status, KiB (Linux); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def rss_kib(pid: int | str = "self") -> int:
    return status_kib("VmRSS", pid)


def emit(**fields: Any) -> None:
    """One JSON line on stdout (how a child talks to its parent)."""
    print(json.dumps(fields), flush=True)


class Child:
    """A benchmark subprocess that writes JSON lines; stderr goes to ``log``.

    ``on_line`` sees every object as it arrives; ``result`` is the ``result``
    field of the one carrying it.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        log: Path,
        on_line: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.process = process
        self.log = log
        self.result: dict[str, Any] | None = None
        self._on_line = on_line
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        command: Sequence[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        on_line: Callable[[dict[str, Any]], None] | None = None,
    ) -> Child:
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=sink,
                cwd=REPO,
                env=env,
            )
        return cls(process, log, on_line)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            if "result" in line:
                self.result = line["result"]
            if self._on_line is not None:
                self._on_line(line)

    def send(self, command: str) -> None:
        if self.process.stdin is not None and self.process.returncode is None:
            self.process.stdin.write(command.encode() + b"\n")

    def alive(self) -> bool:
        return self.process.returncode is None

    async def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the exit and return the result (``RuntimeError`` with its log if none)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
                await self._reader
        except TimeoutError:
            self.kill()
            await self.process.wait()
        if self.result is None:
            raise RuntimeError(
                f"benchmark child exited ({self.process.returncode}) without a result; "
                f"its log ({self.log}):\n{self.tail()}"
            )
        return self.result

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def python_module(module: str, *args: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", module, *args]
