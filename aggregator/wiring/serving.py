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


WS_MAX_FRAME_BYTES = 4096
"""The largest message a websocket client may send (uvicorn closes with 1009
above it).  Dashboards send nothing; uvicorn's default would let each client
park 16 MiB in the pod."""


def server_config(app: FastAPI, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level.lower(),
        ws=WEBSOCKET_PROTOCOL,
        ws_max_size=WS_MAX_FRAME_BYTES,
        access_log=False,
    )
