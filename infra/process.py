"""Start, watch and stop server processes by recorded process id.

Every server gets a name; ``<state>/<name>.pid`` holds its pid and
``<state>/<name>.log`` its output.  Readiness is a caller-supplied probe polled
until a deadline; on failure the error names the log file and quotes its tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.paths import state_dir


class InfraError(RuntimeError):
    """A server could not be installed or started; the message says why in one line."""


def exit_code(action: Callable[[], None]) -> int:
    """Run a command-line action: 0, or 1 with the InfraError's one line on stderr."""
    try:
        action()
    except InfraError as error:
        print(f"infra: {error}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class ServerProcess:
    name: str

    @property
    def pid_file(self) -> Path:
        return state_dir() / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return state_dir() / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start detached (own session, survives the caller); return the pid."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with self.log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n=== start {stamp}: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        """Poll ``probe`` until it returns True; fail fast if the process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise InfraError(
                    f"{what} exited during start-up; see {self.log_file}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.25)
        raise InfraError(
            f"{what} did not answer within {timeout_s:.0f} s; see {self.log_file}:\n"
            f"{self.log_tail()}"
        )

    def stop(self, *, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> bool:
        """Signal the process group, wait, escalate to SIGKILL; True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL at once (failure tests)."""
        return self.stop(timeout_s=0.0, sig=signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP the process group (the server stops answering but keeps its state)."""
        pid = self.pid()
        if pid is None:
            raise InfraError(f"{self.name} is not running")
        os.killpg(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid is None:
            raise InfraError(f"{self.name} is not running")
        os.killpg(pid, signal.SIGCONT)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0


def require_free_port(host: str, port: int, owner: str) -> None:
    """One clear line when something else already listens where a server must."""
    if port_open(host, port):
        raise InfraError(
            f"port {host}:{port} needed by {owner} is already taken by another process "
            f"(find it with: ss -ltnp 'sport = :{port}')"
        )


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> None:
    """Run a build/install step; on failure raise one line naming the log."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    target = log or (state_dir() / f"{what.replace(' ', '-')}.log")
    with target.open("ab") as out:
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if result.returncode != 0:
        raise InfraError(f"{what} failed (exit {result.returncode}); see {target}")
