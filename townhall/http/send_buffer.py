"""A bounded kernel send buffer on each connection: what a slow reader can cost the server.

A turn keeps every character it has written, to save the reply to the session. Linux autotunes
a connection's send buffer up to `tcp_wmem`'s maximum (4 MiB here), so a reader that takes
20 KB/s lets the server write megabytes ahead of it, and the turn holds all of them (measured:
4.4 MiB a slow reader on Chat Completions). A fixed `SO_SNDBUF` turns the autotuning off for
that socket, and the read-ahead credit does the rest: what the server writes ahead of a reader
is then the kernel's buffer (twice the size asked for) and the transport's own.

uvicorn has no setting for it and ASGI never hands the app its socket; uvicorn's `send` is a
bound method of its per-request cycle, whose `transport` is the connection's. Where that is not
so (another server, a test transport), nothing is changed: the server works as before.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)


def connection_socket(send: Send) -> Any | None:
    """The socket under uvicorn's `send` for this request, or None when it cannot be reached."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    extra_info = getattr(transport, "get_extra_info", None)
    return extra_info("socket") if callable(extra_info) else None


def bound_send_buffer(send: Send, size: int) -> None:
    """Fix the send buffer of the connection under `send` at `size` bytes (the kernel doubles
    it for its bookkeeping)."""
    sock = connection_socket(send)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError as error:  # a socket closing under us: the request ends on its own
        logger.debug("could not bound the send buffer: %s", error)


class TownHallApp(FastAPI):
    """FastAPI, with each connection's send buffer bounded before the request is served
    (`STREAM_SEND_BUFFER_BYTES`; 0 leaves it to the kernel)."""

    send_buffer_bytes: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.send_buffer_bytes and scope["type"] == "http":
            bound_send_buffer(send, self.send_buffer_bytes)
        await super().__call__(scope, receive, send)
