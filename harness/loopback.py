"""An ASGI app served on loopback by the project's own uvicorn configuration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from aggregator.wiring.serving import server_config


@contextlib.asynccontextmanager
async def served_on_loopback(app: FastAPI, start_timeout_s: float = 10.0) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields the port."""
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(start_timeout_s):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.01)
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield port
    finally:
        server.should_exit = True
        await serving
