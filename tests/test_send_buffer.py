"""Each connection's kernel send buffer is fixed at STREAM_SEND_BUFFER_BYTES, so the server
cannot write megabytes ahead of a slow reader (and keep them, to save the reply). Observed on
the server's own end of a real connection, under both of uvicorn's HTTP implementations."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from api import create_app
from tests.support.app import live_server, make_settings


def server_end_of(client: socket.socket) -> socket.socket:
    """This process's socket at the other end of `client` (the server runs in this process)."""
    want = (client.getpeername(), client.getsockname())
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket, or gone
        try:
            if (
                candidate.type == socket.SOCK_STREAM
                and (
                    candidate.getsockname(),
                    candidate.getpeername(),
                )
                == want
            ):
                return candidate
        except OSError:
            pass  # a listening or unconnected socket
        candidate.close()
    raise AssertionError("the server's end of the connection was not found")


def send_buffer_after_one_request(url: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")  # kept alive: the socket stays
        with server_end_of(client) as server:
            return server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def kernel_default_send_buffer() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[1])


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_each_connection_gets_the_configured_send_buffer(tmp_path: Path, http: str) -> None:
    settings = make_settings(
        stream_send_buffer_bytes=50_000,
        database_url=f"sqlite:///{tmp_path}/records.db",
        outbox_path=str(tmp_path / "outbox.db"),
    )
    async with live_server(create_app(settings), http=http) as url:
        size = await asyncio.to_thread(send_buffer_after_one_request, url)
    assert size == 2 * 50_000  # Linux doubles what it is asked for


async def test_zero_leaves_the_send_buffer_to_the_kernel(tmp_path: Path) -> None:
    settings = make_settings(
        stream_send_buffer_bytes=0,
        database_url=f"sqlite:///{tmp_path}/records.db",
        outbox_path=str(tmp_path / "outbox.db"),
    )
    async with live_server(create_app(settings)) as url:
        size = await asyncio.to_thread(send_buffer_after_one_request, url)
    assert size >= kernel_default_send_buffer()  # tcp_wmem's default, or grown from it
