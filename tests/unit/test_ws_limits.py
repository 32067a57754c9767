"""``/ws/stats`` under clients that misbehave, on a real uvicorn on loopback: a pod
serves at most its maximum of clients (the next gets 1013), a client that sends
data is closed with 1003 and one that sends a large frame with 1009, and a client
that leaves frees its place at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from aggregator.api.app import UNSUPPORTED_DATA, create_app
from aggregator.ports.bus import Published
from aggregator.services.hub import TRY_AGAIN_LATER
from aggregator.services.pod import Pod
from aggregator.wiring.serving import WS_MAX_FRAME_BYTES
from harness.loopback import served_on_loopback
from harness.memory_pod import OnePod, memory_pod

MAX_CLIENTS = 3
MESSAGE_TOO_BIG = 1009


class Served:
    def __init__(self, pod: Pod, port: int) -> None:
        self.pod = pod
        self.url = f"ws://127.0.0.1:{port}/ws/stats"

    def publish(self, n: int) -> None:
        self.pod.hub.deliver(Published(1, "pod-0_abcde", float(n), b'{"n": %d}' % n))


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    pod = memory_pod()
    async with served_on_loopback(create_app(OnePod(pod), ws_max_clients=MAX_CLIENTS)) as port:
        yield Served(pod, port)


async def close_code(client: ClientConnection) -> int | None:
    """Read until the server closes; its close code (None: no close frame, 1006)."""
    async with asyncio.timeout(10):
        try:
            while True:
                await client.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 (the hub has no event)
            await asyncio.sleep(0.01)


async def test_a_pod_serves_its_maximum_and_turns_the_next_client_away(served: Served) -> None:
    served.publish(1)
    clients = [await connect(served.url) for _ in range(MAX_CLIENTS)]
    try:
        for client in clients:
            assert await client.recv() == '{"n": 1}'
        async with connect(served.url) as extra:
            assert await close_code(extra) == TRY_AGAIN_LATER
        assert served.pod.hub.refused == 1
        served.publish(2)
        for client in clients:  # the ones in keep their feed
            assert await client.recv() == '{"n": 2}'
        await clients[0].close()
        await until(lambda: served.pod.hub.clients == MAX_CLIENTS - 1)  # freed at once
        async with connect(served.url) as again:
            assert await again.recv() == '{"n": 2}'
    finally:
        for client in clients:
            await client.close()


async def test_a_client_that_sends_data_is_closed_with_1003(served: Served) -> None:
    async with connect(served.url) as client:
        await client.send("subscribe me to everything")
        assert await close_code(client) == UNSUPPORTED_DATA
    await until(lambda: served.pod.hub.clients == 0)


async def test_a_frame_over_the_limit_is_closed_with_1009(served: Served) -> None:
    async with connect(served.url, max_size=None) as client:
        await client.send(b"x" * (WS_MAX_FRAME_BYTES + 1))
        assert await close_code(client) == MESSAGE_TOO_BIG
    await until(lambda: served.pod.hub.clients == 0)
