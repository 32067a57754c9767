"""The HTTP server's configuration (aggregator.wiring.serving), on loopback: no
deprecated uvicorn protocol, and a close code that reaches the client."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from fastapi import FastAPI, WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aggregator.services.hub import SERVICE_RESTART
from harness.loopback import served_on_loopback

LOAD_WITH_WARNINGS_AS_ERRORS = """
import warnings
from fastapi import FastAPI
from uvicorn.config import UvicornDeprecationWarning
warnings.simplefilter("error", UvicornDeprecationWarning)
{config}.load()
"""


@pytest.mark.parametrize(
    ("config", "deprecated"),
    [
        (
            "__import__('aggregator.wiring.serving').wiring.serving.server_config("
            "FastAPI(), host='127.0.0.1', port=0, log_level='INFO')",
            False,
        ),
        # The control: the legacy protocol does warn, so the check above can fail.
        ("__import__('uvicorn').Config(FastAPI(), ws='websockets')", True),
    ],
    ids=["ours", "legacy"],
)
def test_the_server_loads_no_deprecated_protocol(config: str, deprecated: bool) -> None:
    # In a child interpreter: the warning fires once, when uvicorn first imports
    # the protocol's module, which another test of this process may have done.
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_WARNINGS_AS_ERRORS.format(config=config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode != 0) == deprecated, result.stderr
    if deprecated:
        assert "UvicornDeprecationWarning" in result.stderr


async def test_a_close_from_the_server_reaches_the_client_with_its_code() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def closing(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close(code=SERVICE_RESTART)

    async with (
        served_on_loopback(app) as port,
        asyncio.timeout(10),
        connect(f"ws://127.0.0.1:{port}/ws") as client,
    ):
        assert await client.recv() == "hello"
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None, "closed without a close frame (1006)"
    assert closed.value.rcvd.code == SERVICE_RESTART
