"""Server processes for tests: `uvicorn api:app` started as its own process on a free port.

The port is bound (and listening) here before the process starts, and the socket handed to
uvicorn (uvicorn_on_socket.py): picking a free port and letting the child bind it later
races with every other process on a loaded machine, and a health poll sent before the child
listens can even connect to itself (TCP self-connect) and take the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parents[2]  # where api.py is
ON_SOCKET = Path(__file__).with_name("uvicorn_on_socket.py")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def kill_hard(self) -> None:
        """kill -9: no shutdown, no lock released, as a crashed worker."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def clean_env(**settings: str) -> dict[str, str]:
    """The environment minus anything that would pick a real model or store, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SUPABASE_"))}
    # Blank values win over a developer's .env file.
    env |= {
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "SUPABASE_URL": "",
        "SUPABASE_SERVICE_KEY": "",
        "TRACING": "off",
    }
    return env | settings


def start_server(env: dict[str, str], log_path: Path) -> ServerProcess:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    try:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(ON_SOCKET), str(listener.fileno())],
                cwd=PROJECT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
    finally:
        listener.close()  # the child holds its own copy
    return ServerProcess(process, f"http://127.0.0.1:{port}", log_path)


def stop_server(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


@contextlib.contextmanager
def server_process(env: dict[str, str], log_path: Path) -> Iterator[ServerProcess]:
    """One server process, ready when this yields (blocks while it starts)."""
    server = start_server(env, log_path)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop_server(server)


@contextlib.asynccontextmanager
async def server_processes(
    envs: list[dict[str, str]], log_dir: Path
) -> AsyncIterator[list[ServerProcess]]:
    """Several server processes started at once; this event loop keeps running meanwhile."""
    servers = [
        start_server(env, log_dir / f"server-{i}-{id(env)}.log") for i, env in enumerate(envs)
    ]
    try:
        await asyncio.gather(*(wait_healthy_async(server) for server in servers))
        yield servers
    finally:
        for server in servers:
            stop_server(server)


# Generous: importing openai-agents takes ~2 s idle, far longer on a loaded 2-core machine.
START_LIMIT_SECONDS = 90


async def wait_healthy_async(server: ServerProcess, limit: float = START_LIMIT_SECONDS) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    async with httpx.AsyncClient(timeout=5) as client:
        while loop.time() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited: {server.log()}")
            try:
                if (await client.get(f"{server.base_url}/health")).status_code in (200, 503):
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"server did not start: {server.log()}")


def wait_healthy(server: ServerProcess, timeout: float = START_LIMIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited: {server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=5).status_code in (200, 503):
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"server did not start: {server.log()}")
