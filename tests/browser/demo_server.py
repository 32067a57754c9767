"""``aggregator demo`` as a subprocess on a loopback port, for the browser tests.

The server can be stopped (SIGTERM: graceful, websockets closed with 1012; or
SIGKILL: connections just drop) and started again on the same port, which is how
the tests check that the page reconnects by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

# The demo's lease timings (aggregator.wiring.cli.DEMO_LEASE): after SIGKILL of
# the leader, a new one publishes within lease + 2 x retry (x jitter 1.2) plus
# one reduce tick.
DEMO_LEASE_S = 6.0
DEMO_RETRY_S = 1.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("aggregator")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "aggregator.wiring.cli"]
    return [*prefix, "demo", "--host", HOST, "--port", str(port), "--pods", "3"]


class DemoServer:
    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._client = httpx.Client(base_url=self.base_url, timeout=5.0)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the demo and wait until it serves a snapshot."""
        if self.process is not None:
            raise RuntimeError("the demo server is already running")
        self.starts += 1
        log = (self.log_dir / f"demo-{self.port}-{self.starts}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            _command(self.port), stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"aggregator demo exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if self._client.get("/api/stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"aggregator demo served no snapshot in {START_TIMEOUT_S} s")

    def stop(self, how: signal.Signals = signal.SIGTERM) -> bool:
        """Send ``how``; SIGKILL if the server has not exited after STOP_TIMEOUT_S.

        Returns whether it exited without that escalation.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return True
        process.send_signal(how)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False
        return True

    def close(self) -> None:
        self.stop(
            signal.SIGKILL if self.process and self.process.poll() is None else signal.SIGTERM
        )
        self._client.close()

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_dir / f"demo-{self.port}-{self.starts}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- API --------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        response = self._client.get(path)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/api/stats")
        return stats

    def demo_pods(self) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.get("/api/demo/pods")["pods"]
        return pods
