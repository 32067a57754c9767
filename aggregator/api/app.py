"""The HTTP and websocket API, and the dashboard.

``/api/stats`` latest snapshot · ``/api/leader`` · ``/api/members`` ·
``/ws/stats`` push · ``/healthz`` · ``/readyz`` · ``/metrics`` · ``/`` dashboard;
in the demo also ``/api/demo/pods`` to kill, stop or restart simulated pods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)

from aggregator.api.backend import Backend, DemoControls
from aggregator.api.dashboard import dashboard_dir
from aggregator.api.metrics import AggregatorCollector
from aggregator.core.incarnation import short_identity
from aggregator.services.hub import SERVICE_RESTART, TRY_AGAIN_LATER, Mailbox
from aggregator.services.pod import Pod

WS_MAX_CLIENTS = 1000
"""Websocket clients one pod serves at most (``AGG_WS_MAX_CLIENTS``); the next
is closed with 1013, Try Again Later, and behind the Service reaches another pod."""
UNSUPPORTED_DATA = 1003
"""Close code for a client that sends anything: ``/ws/stats`` only pushes."""
NORMAL_CLOSURE = 1000


def create_app(
    backend: Backend,
    *,
    demo: DemoControls | None = None,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ws_max_clients: int = WS_MAX_CLIENTS,
) -> FastAPI:
    app = FastAPI(title="stream-aggregator", lifespan=lifespan)
    registry = CollectorRegistry()
    registry.register(AggregatorCollector(backend))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_open_fds

    def front() -> Pod:
        pod = backend.front()
        if pod is None:
            raise HTTPException(503, "no pod is running")
        return pod

    @app.get("/api/stats")
    async def stats() -> Response:
        latest = front().hub.latest
        if latest is None:
            return JSONResponse({"detail": "no snapshot published yet"}, status_code=503)
        return Response(latest.payload, media_type="application/json")

    @app.get("/api/leader")
    async def leader() -> dict[str, Any]:
        pod = front()
        latest = pod.hub.latest
        return {
            "leader": short_identity(pod.elector.leader or "") or None,
            "epoch": pod.hub.highest_epoch if pod.hub.highest_epoch >= 0 else None,
            "lease": pod.ports.lease.description,
            "pod": pod.name,
            "identity": pod.identity,
            "this_pod_leads": pod.elector.is_leader(),
            "last_snapshot_at": latest.generated_at if latest else None,
            "demo": demo is not None,
        }

    @app.get("/api/members")
    async def members() -> list[dict[str, Any]]:
        return list((await front().live_fields())["members"])

    @app.get("/healthz")
    async def healthz() -> Response:
        pod = backend.front()
        if pod is None or not pod.live():
            return JSONResponse({"status": "down"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        pod = backend.front()
        if pod is None:
            return JSONResponse({"ready": False, "why": ["no pod"]}, status_code=503)
        why = pod.not_ready_because()
        return JSONResponse({"ready": not why, "why": why}, status_code=503 if why else 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws/stats")
    async def ws_stats(socket: WebSocket) -> None:
        pod = backend.front()
        if pod is None:
            await socket.close(code=TRY_AGAIN_LATER)
            return
        await socket.accept()
        if pod.hub.clients >= ws_max_clients:
            pod.hub.refused += 1
            await socket.close(code=TRY_AGAIN_LATER, reason="too many clients on this pod")
            return
        mailbox = pod.hub.connect()
        listener = asyncio.create_task(_refuse_input(socket, mailbox))
        try:
            while True:
                message = await mailbox.next()
                if message is None:
                    await socket.close(code=mailbox.closed_with or SERVICE_RESTART)
                    return
                await socket.send_text(message.payload.decode())
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            listener.cancel()
            pod.hub.disconnect(mailbox)

    if demo is not None:
        _demo_routes(app, demo)

    directory = dashboard_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(directory / "index.html")

    app.mount("/static", StaticFiles(directory=directory), name="static")
    return app


async def _refuse_input(socket: WebSocket, mailbox: Mailbox) -> None:
    """Read what the client sends, which should be nothing: data ends the connection
    with 1003, a disconnect ends the sender at once (not at its next snapshot).
    uvicorn reads no further frame until this one is taken, and its ``ws_max_size``
    bounds the frame (wiring/serving.py), so a client never holds more than that."""
    try:
        message = await socket.receive()
    except (WebSocketDisconnect, RuntimeError):
        message = {"type": "websocket.disconnect"}
    mailbox.close(UNSUPPORTED_DATA if message["type"] == "websocket.receive" else NORMAL_CLOSURE)


def _demo_routes(app: FastAPI, demo: DemoControls) -> None:
    async def act(action: Callable[[str], Awaitable[None]], name: str) -> dict[str, Any]:
        try:
            await action(name)
        except KeyError:
            raise HTTPException(404, f"no simulated pod named {name!r}") from None
        except ValueError as error:
            raise HTTPException(409, str(error)) from None
        return {"pods": demo.describe()}

    @app.get("/api/demo/pods")
    async def pods() -> dict[str, Any]:
        return {"pods": demo.describe()}

    @app.post("/api/demo/pods/{name}/kill")
    async def kill(name: str) -> dict[str, Any]:
        return await act(demo.kill, name)

    @app.post("/api/demo/pods/{name}/stop")
    async def stop(name: str) -> dict[str, Any]:
        return await act(demo.stop, name)

    @app.post("/api/demo/pods/{name}/restart")
    async def restart(name: str) -> dict[str, Any]:
        return await act(demo.restart, name)
