"""The HTTP server's configuration: one home for the production pod and the demo."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

WEBSOCKET_PROTOCOL = "websockets-sansio"
"""uvicorn's sans-I/O protocol on the ``websockets`` library.  Its legacy
``websockets`` protocol is deprecated (every pod logged a UvicornDeprecationWarning
at start).  uvicorn 0.52.1 or later: from that release the sans-I/O protocol
completes the closing handshake when the server closes, so a browser receives our
close code (1012 on shutdown), not an abnormal 1006."""


def server_config(app: FastAPI, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level.lower(),
        ws=WEBSOCKET_PROTOCOL,
        access_log=False,
    )
