"""What websocket clients cost a pod, and whether the ones that never read hold memory.

A child process serves the real API (``create_app`` over a pod on memory
adapters, behind the project's uvicorn configuration) and publishes a snapshot of
``--snapshot-kib`` every second through the pod's hub, as a leader's tick does;
nothing else in it grows.  The benchmark samples the child's RSS with no client
(the baseline, in the same run), then connects ``--clients`` websocket clients to
``/ws/stats``, of which ``--stalled`` never read: their client library stops
reading its socket after one message, so the pod's sends to them back up as they
would towards a stuck browser.  It then holds them for ``--hold`` seconds and
samples again.  Right after they connect, one client more than the pod's limit
asks to connect and must be closed with 1013.

Printed: the baseline RSS, the RSS with every client, the cost per client, the
RSS slope over the second half of the hold (flat means nothing accumulates for
the stalled clients), how many snapshots the readers got, and the 1013.  Run:
``python -m bench.ws_clients [--clients 1000] [--stalled 100] [--hold 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TRY_AGAIN_LATER = 1013
SLOPE_LIMIT_MIB_PER_MIN = 2.0
"""Judged flat below this RSS growth over the second half of the hold."""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _wait_for_stats(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the demo published no snapshot within 60 s")
        time.sleep(0.5)


async def _reader(url: str, counts: list[int], index: int, stop: asyncio.Event) -> None:
    async with connect(url, open_timeout=30, max_queue=4) as client:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await client.recv()
                    counts[index] += 1


async def _stalled(url: str) -> ClientConnection:
    """A client whose library reads one message and then no more from its socket."""
    return await connect(url, open_timeout=30, max_queue=1)


async def _one_too_many(url: str) -> int | None:
    """The close code a client over the limit gets (None: no close frame, or none
    within 10 s, which TimeoutError reports)."""
    async with connect(url, open_timeout=30) as client:
        try:
            async with asyncio.timeout(10):
                await client.recv()
                await client.recv()  # a snapshot came: keep going until the close
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        return None  # two snapshots: it was served, not refused


async def measure(
    port: int, pid: int, clients: int, stalled: int, hold_s: float
) -> dict[str, object]:
    url = f"ws://127.0.0.1:{port}/ws/stats"
    baseline = [_rss_mib(pid)]
    for _ in range(4):
        await asyncio.sleep(1)
        baseline.append(_rss_mib(pid))
    readers = clients - stalled
    counts = [0] * readers
    stop = asyncio.Event()
    tasks = []
    for index in range(readers):
        tasks.append(asyncio.create_task(_reader(url, counts, index, stop)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # a connection storm is not what is measured
    stuck = [await _stalled(url) for _ in range(stalled)]
    refused = await _one_too_many(url)
    connected_at = time.monotonic()
    samples: list[tuple[float, float]] = []
    while time.monotonic() - connected_at < hold_s:
        await asyncio.sleep(2)
        samples.append((time.monotonic() - connected_at, _rss_mib(pid)))
    dropped = sum(1 for client in stuck if client.close_code is not None)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in stuck:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)
    second_half = [(t, r) for t, r in samples if t >= hold_s / 2]
    slope = 0.0
    if len(second_half) >= 2:
        (t0, r0), (t1, r1) = second_half[0], second_half[-1]
        slope = (r1 - r0) / max(t1 - t0, 1e-9) * 60
    base = min(baseline)
    held = max(r for _, r in samples)
    return {
        "baseline_mib": base,
        "with_clients_mib": held,
        "per_client_kib": (held - base) * 1024 / clients,
        "slope_mib_per_min": slope,
        "reader_snapshots_min": min(counts) if counts else 0,
        "refused_code": refused,
        "stalled_dropped": dropped,
    }


def serve(port: int, snapshot_kib: int) -> None:
    """The child: one pod's API on loopback, a snapshot through its hub every second."""
    import random

    import uvicorn

    from aggregator.api.app import create_app
    from aggregator.ports.bus import Published
    from aggregator.wiring.serving import server_config
    from harness.memory_pod import OnePod, memory_pod

    pod = memory_pod()
    rng = random.Random(7)
    keys = [f"app-{n}" for n in range(snapshot_kib * 1024 // 40)]
    app = create_app(OnePod(pod))

    async def publish() -> None:
        for tick in itertools.count():
            rows = [{"key": key, "count": rng.randrange(10**6)} for key in keys]
            body = json.dumps({"schema": 1, "tick": tick, "by": {"app": rows}}).encode()
            pod.hub.deliver(Published(0, "bench_pod", float(tick), body))
            await asyncio.sleep(1)

    async def main() -> None:
        server = uvicorn.Server(
            server_config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        publisher = asyncio.create_task(publish())
        await server.serve()
        publisher.cancel()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--snapshot-kib", type=int, default=32)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.snapshot_kib)
        return 0
    _raise_file_limit(2 * args.clients + 512)
    port = _free_port()
    demo = subprocess.Popen(
        [
            sys.executable, "-m", "bench.ws_clients",
            "--serve", str(port), "--snapshot-kib", str(args.snapshot_kib),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        _wait_for_stats(port)
        figures = asyncio.run(measure(port, demo.pid, args.clients, args.stalled, args.hold))
    finally:
        demo.terminate()
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:
            demo.kill()
    print(
        f"websocket clients on one pod: {args.clients} ({args.stalled} never read), "
        f"held {args.hold:.0f} s, a {args.snapshot_kib} KiB snapshot every second"
    )
    print(f"  RSS without clients (baseline): {figures['baseline_mib']:.1f} MiB")
    print(f"  RSS with the clients:           {figures['with_clients_mib']:.1f} MiB")
    print(f"  per client:                     {figures['per_client_kib']:.1f} KiB")
    slope = float(str(figures["slope_mib_per_min"]))
    flat = abs(slope) <= SLOPE_LIMIT_MIB_PER_MIN
    print(
        f"  RSS slope, second half:         {slope:+.2f} MiB/min "
        f"({'flat' if flat else 'GROWING'}, limit {SLOPE_LIMIT_MIB_PER_MIN:g})"
    )
    print(f"  snapshots per reading client:   >= {figures['reader_snapshots_min']}")
    refused = figures["refused_code"]
    print(f"  client over the limit closed with: {refused}")
    print(
        f"  stalled clients the pod closed during the hold: {figures['stalled_dropped']} "
        f"of {args.stalled} (keepalive pings unanswered)"
    )
    return 0 if flat and refused == TRY_AGAIN_LATER else 1


if __name__ == "__main__":
    raise SystemExit(main())
