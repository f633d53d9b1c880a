"""The reliability run's second part: faults that need a real server process.

- SIGTERM with live streams: how long until every stream has its last frame and the process has
  exited, and how each stream ended.
- kill -9 while reports are being written to the store: how many are lost after a restart.
- /health while a 5 MB answer streams, what a stalled reader makes the server pull, and server
  memory while clients read slowly: the lean decoder with its read-ahead credit against the
  SDK's own handler (LEAN_STREAM=false), in one run.

Each starts `uvicorn api:app` as its own process (tests/support/processes.py), on 127.0.0.1,
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.app import free_port, live_server, wait_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.postgrest_double import PostgRESTDouble
from tests.support.processes import clean_env, server_processes

SUPPORT = Path(__file__).resolve().parent.parent / "tests" / "support"

SERVICE_KEY = "sb_secret_process_faults"


async def _stream_to_end(client: httpx.AsyncClient, n: int, first: asyncio.Event) -> str:
    """How the stream ended: the code of its error event, "done", or "cut" (no [DONE])."""
    ending, event = "cut", "message"
    payload = {"message": f"a long story {n}", "session_id": f"term-{n}"}
    async with client.stream("POST", "/chat", json=payload) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
                first.set()
                if event == "error":
                    ending = data.split('"code":"')[1].split('"')[0]
                elif event == "done":
                    ending = "done"
                elif data == "[DONE]":
                    return ending
                event = "message"
    return "cut"


async def sigterm_with_live_streams(streams: int = 20, grace: float = 2.0) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="townhall-sigterm-"))
    fake = FakeOpenAI(tokens=1000, delay=0.02)  # 20 s answers, far past the grace
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        env = clean_env(
            OPENAI_API_KEY="sk-fake",
            OPENAI_BASE_URL=f"{upstream}/v1",
            OPENAI_API="responses",
            MODEL="fake",
            SHUTDOWN_GRACE_SECONDS=str(grace),
            RATE_LIMIT_PER_MINUTE="0",
            DATABASE_URL=f"sqlite:///{data}/records.db",
            OUTBOX_PATH=str(data / "outbox.db"),
            LOG_LEVEL="WARNING",
        )
        async with server_processes([env], data) as (server,):
            limits = httpx.Limits(max_connections=streams + 5)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=60, limits=limits
            ) as client:
                firsts = [asyncio.Event() for _ in range(streams)]
                tasks = [
                    asyncio.create_task(_stream_to_end(client, n, firsts[n]))
                    for n in range(streams)
                ]
                await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 60)
                sent = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                refused = (await client.post("/chat", json={"message": "hi"})).status_code
                endings = await asyncio.wait_for(asyncio.gather(*tasks), 60)
                last_frame = time.monotonic() - sent
            await wait_for(lambda: server.process.poll() is not None, limit=30)
            exited = time.monotonic() - sent
    return {
        f"SIGTERM with {streams} live streams: grace (s)": grace,
        "SIGTERM: a new turn during the drain got": refused,
        "SIGTERM: streams ended server_restarting, then [DONE]": endings.count("server_restarting"),
        "SIGTERM: streams cut without [DONE]": endings.count("cut"),
        "SIGTERM: to the last stream's last frame (s)": round(last_frame, 2),
        "SIGTERM: to process exit (s)": round(exited, 2),
        "SIGTERM: exit status": server.process.returncode,
    }


def _outbox_depth(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def kill_9_while_filing(reports: int = 10) -> dict[str, Any]:
    """Reports whose store writes hang are in flight when the server is killed; restarted, the
    server must deliver every one, once."""
    data = Path(tempfile.mkdtemp(prefix="townhall-kill9-"))
    double = PostgRESTDouble(SERVICE_KEY)
    fake = FakeOpenAI(tokens=3)
    async with (
        live_server(double.app()) as store,  # type: ignore[arg-type]
        live_server(fake) as upstream,  # type: ignore[arg-type]
    ):
        env = clean_env(
            OPENAI_API_KEY="sk-fake",
            OPENAI_BASE_URL=f"{upstream}/v1",
            OPENAI_API="responses",
            MODEL="fake",
            SUPABASE_URL=store,
            SUPABASE_SERVICE_KEY=SERVICE_KEY,
            STORE_TIMEOUT_SECONDS="60",
            OUTBOX_PATH=str(data / "outbox.db"),
            OUTBOX_RETRY_SECONDS="0.1",
            RATE_LIMIT_PER_MINUTE="0",
            DATABASE_URL=f"sqlite:///{data}/threads.db",
            LOG_LEVEL="WARNING",
        )
        double.hang = True
        async with server_processes([env], data) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                turns = [
                    asyncio.create_task(
                        client.post(
                            "/chat",
                            json={"message": f"REPORT: loose tile {n}", "session_id": f"k{n}"},
                        )
                    )
                    for n in range(reports)
                ]

                def writes_in_flight() -> bool:
                    return sum(r["method"] == "POST" for r in double.requests) >= reports

                await wait_for(writes_in_flight, limit=60)
                server.kill_hard()
                for turn in turns:
                    turn.cancel()
                await asyncio.gather(*turns, return_exceptions=True)
        queued = _outbox_depth(data / "outbox.db")
        double.hang = False
        double.release()
        async with server_processes([env], data):
            await wait_for(lambda: _outbox_depth(data / "outbox.db") == 0, limit=60)
        rows = [row["reference"] for row in double.rows["incidents"]]
    return {
        f"kill -9 with {reports} store writes in flight: in the outbox after the crash": queued,
        "kill -9: records written after the restart": len(rows),
        "kill -9: records lost": reports - len(set(rows)),
        "kill -9: duplicate records": len(rows) - len(set(rows)),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


WORD = "w" * 2000  # the fake answers with the message's words: big chunks, few of them
APIS = ("chat_completions", "responses")
DECODERS = {True: "lean decoder + credit", False: "SDK's own"}


def _big_answer_env(
    upstream: str,
    data: Path,
    api: str,
    lean: bool,
    read_ahead: str = "64000",
    send_buffer: str = "65536",
) -> dict[str, str]:
    return clean_env(
        STREAM_READ_AHEAD_CHARS=read_ahead,
        STREAM_SEND_BUFFER_BYTES=send_buffer,
        OPENAI_API_KEY="sk-fake",
        OPENAI_BASE_URL=f"{upstream}/v1",
        OPENAI_API=api,
        MODEL="fake",
        LEAN_STREAM="true" if lean else "false",
        MAX_ANSWER_CHARS="200000000",
        RATE_LIMIT_PER_MINUTE="0",
        MAX_SESSIONS="100000",
        DATABASE_URL=f"sqlite:///{data}/records.db",
        OUTBOX_PATH=str(data / "outbox.db"),
        LOG_LEVEL="WARNING",
    )


def _spawn_fake(port: int, tokens: int) -> subprocess.Popen[bytes]:
    script = str(SUPPORT / "fake_openai.py")
    return subprocess.Popen([sys.executable, script, "--port", str(port), "--tokens", str(tokens)])


@contextlib.asynccontextmanager
async def fake_process(tokens: int) -> AsyncIterator[str]:
    """The fake upstream as its own process, so neither the server nor the measuring client
    shares a loop (or a core's time slices) with it."""
    port = free_port()
    fake = _spawn_fake(port, tokens)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as client:

            async def up() -> bool:
                try:
                    return (await client.get(f"{url}/_stats")).status_code == 200
                except httpx.TransportError:
                    return False

            for _ in range(300):
                if await up():
                    break
                await asyncio.sleep(0.1)
        yield url
    finally:
        fake.terminate()
        fake.wait(timeout=10)


async def _fake_sent_bytes(client: httpx.AsyncClient, upstream: str) -> int:
    return int((await client.get(f"{upstream}/_stats")).json()["sent_bytes"])


@contextlib.asynccontextmanager
async def _big_answer_server(
    tokens: int, api: str, lean: bool, prefix: str, **env_options: str
) -> AsyncIterator[tuple[str, Any]]:
    """A fake upstream answering `tokens` tokens, and a server on it (`env_options`: the
    read-ahead and send-buffer settings of `_big_answer_env`)."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    async with fake_process(tokens) as upstream:
        env = _big_answer_env(upstream, data, api, lean, **env_options)
        async with server_processes([env], data) as (server,):
            yield upstream, server


# A client in its own process, as a resident's browser is: it reads the stream to the end as
# fast as it can and prints how many bytes it got.
READER = """
import json, sys, urllib.request
request = urllib.request.Request(
    sys.argv[1], data=json.dumps({"message": sys.argv[2], "session_id": sys.argv[3]}).encode(),
    headers={"content-type": "application/json"},
)
total = 0
with urllib.request.urlopen(request, timeout=300) as response:
    while chunk := response.read(65536):
        total += len(chunk)
print(total)
"""


async def health_during_a_big_answer(
    answer_chars: int = 5_000_000, answers: int = 5
) -> dict[str, Any]:
    """/health latency while a client in another process reads a 5 MB answer as fast as it can:
    both wire APIs, our lean decoder vs the SDK's own (LEAN_STREAM=false), in one run. The fake
    upstream runs in its own process too."""
    rows: dict[str, Any] = {}
    for api in APIS:
        for lean in (True, False):
            async with _big_answer_server(
                answer_chars // (len(WORD) + 1), api, lean, "townhall-big-"
            ) as (_, server):
                cold: list[float] = []  # the first big answer of a fresh process
                during: list[float] = []
                took: list[float] = []
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                    idle = [await _timed_health(client) for _ in range(20)]
                    for n in range(answers + 1):
                        reader = await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-c",
                            READER,
                            f"{server.base_url}/chat",
                            WORD,
                            f"big-{n}",
                            stdout=asyncio.subprocess.PIPE,
                        )
                        answer = asyncio.create_task(reader.communicate())
                        samples = cold if n == 0 else during
                        started = time.monotonic()
                        while not answer.done() and time.monotonic() - started < 240:
                            samples.append(await _timed_health(client))
                            await asyncio.sleep(0.01)
                        if n:
                            took.append(time.monotonic() - started)
                        await answer
            name = f"5 MB answer, {api}, {DECODERS[lean]}"
            rows[f"{name}: /health p50 / p99 / max during it (ms)"] = (
                f"{_pct(during, 50):.0f} / {_pct(during, 99):.0f} / {max(during or [0]):.0f}"
                f" ({len(during)} samples, {answers} answers; idle p50 {_pct(idle, 50):.1f};"
                f" max during the process's first big answer {max(cold or [0]):.0f})"
            )
            rows[f"{name}: whole answer, slowest of {answers} (s)"] = round(max(took), 2)
    return rows


async def _timed_health(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    await client.get("/health")
    return (time.perf_counter() - started) * 1000


def _pct(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * pct // 100)]


# A receive buffer fixed at 64 KiB (the kernel doubles it): without it Linux grows a loopback
# client's buffer towards tcp_rmem's 32 MiB, which then holds the answer the server sent, and a
# server that pulls everything looks the same as one that waits.
SMALL_RECEIVE_BUFFER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]


async def stalled_reader(answer_chars: int = 60_000_000, seconds: float = 5) -> dict[str, Any]:
    """A client reads 100 KB of a 60 MB answer and stops reading (it stays connected): how much
    the server pulls from the upstream meanwhile, and its memory. Lean decoder with the credit,
    without it (STREAM_READ_AHEAD_CHARS=0), and the SDK's own (Chat Completions path)."""
    rows: dict[str, Any] = {}
    variants = {
        "lean decoder + credit": (True, "64000"),
        "lean decoder, read-ahead unbounded": (True, "0"),
        "SDK's own": (False, "64000"),
    }
    for name, (lean, read_ahead) in variants.items():
        async with _big_answer_server(
            answer_chars // (len(WORD) + 1),
            "chat_completions",
            lean,
            "townhall-stall-",
            read_ahead=read_ahead,
        ) as (upstream, server):
            pid = server.process.pid
            transport = httpx.AsyncHTTPTransport(socket_options=SMALL_RECEIVE_BUFFER)
            async with (
                httpx.AsyncClient(timeout=30) as stats,
                httpx.AsyncClient(base_url=server.base_url, timeout=60, transport=transport) as c,
            ):
                await c.post("/chat", json={"message": "warm up", "session_id": "w"})
                before = _rss_kib(pid)
                received = 0
                payload = {"message": WORD, "session_id": "stalled"}
                async with c.stream("POST", "/chat", json=payload) as response:
                    # Kept: a dropped iterator is finalized, which closes the connection.
                    chunks = response.aiter_raw()
                    async for chunk in chunks:
                        received += len(chunk)
                        if received > 100_000:
                            break
                    await asyncio.sleep(seconds)
                    pulled = await _fake_sent_bytes(stats, upstream)
                    grown = _rss_kib(pid) - before
        label = f"stalled reader (read 100 KB of 60 MB, then {seconds:.0f} s idle), {name}"
        rows[f"{label}: pulled from the upstream (MB)"] = round(pulled / 1e6, 1)
        rows[f"{label}: server RSS growth (MiB)"] = round(grown / 1024, 1)
    return rows


async def slow_reader_memory(
    readers: int = 10, answer_chars: int = 40_000_000, seconds: float = 6
) -> dict[str, Any]:
    """Server memory while 10 clients each read a 40 MB answer at 20 KB/s through a 64 KiB
    receive window (a slow link's; on loopback the default window grows until the client's
    kernel holds the whole answer, and no reader is slow): both wire APIs, lean decoder +
    credit vs the SDK's own, and the send buffer fixed (the default) vs left to the kernel."""
    rows: dict[str, Any] = {}
    variants = ((True, "65536"), (True, "0"), (False, "65536"))
    for api in APIS:
        for lean, send_buffer in variants:
            async with _big_answer_server(
                answer_chars // (len(WORD) + 1),
                api,
                lean,
                "townhall-slow-",
                send_buffer=send_buffer,
            ) as (upstream, server):
                pid = server.process.pid
                limits = httpx.Limits(max_connections=readers + 2)
                transport = httpx.AsyncHTTPTransport(
                    socket_options=SMALL_RECEIVE_BUFFER, limits=limits
                )
                async with (
                    httpx.AsyncClient(timeout=30) as stats,
                    httpx.AsyncClient(
                        base_url=server.base_url, timeout=60, transport=transport
                    ) as c,
                ):
                    await c.post("/chat", json={"message": "warm up", "session_id": "w"})
                    before = _rss_kib(pid)
                    peak = before

                    async def read_slowly(n: int, pid: int = pid) -> None:
                        nonlocal peak
                        payload = {"message": WORD, "session_id": f"slow-{n}"}
                        deadline = time.monotonic() + seconds
                        async with c.stream("POST", "/chat", json=payload) as response:
                            async for _chunk in response.aiter_raw(2048):
                                await asyncio.sleep(0.1)  # 20 KB/s
                                peak = max(peak, _rss_kib(pid))
                                if time.monotonic() > deadline:
                                    break

                    await asyncio.gather(*(read_slowly(n) for n in range(readers)))
                    pulled = await _fake_sent_bytes(stats, upstream)
            kernel = ", send buffer left to the kernel" if send_buffer == "0" else ""
            name = f"{readers} slow readers (20 KB/s, {seconds:.0f} s), {api}, "
            name += DECODERS[lean] + kernel
            rows[f"{name}: server RSS growth per reader (MiB)"] = round(
                (peak - before) / 1024 / readers, 2
            )
            rows[f"{name}: pulled from the upstream per reader (MB)"] = round(
                pulled / 1e6 / readers, 1
            )
    return rows
