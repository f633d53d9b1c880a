"""A reader that stops reading, a reader that leaves, and an answer that never ends, against a
real server process and a fake upstream: the upstream is read only as fast as the client takes
frames, a client gone closes the upstream within seconds, and MAX_ANSWER_CHARS ends a runaway
answer with an `error` event and `data: [DONE]`."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.app import live_server, wait_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.frames import without_ids
from tests.support.processes import clean_env, server_processes

WORD = "w" * 2000  # the fake answers with the message's words: big chunks, few of them
APIS = ["chat_completions", "responses"]


def env_for(upstream: str, tmp_path: Path, api: str, **extra: str) -> dict[str, str]:
    return clean_env(
        OPENAI_API_KEY="sk-fake",
        OPENAI_BASE_URL=f"{upstream}/v1",
        OPENAI_API=api,
        MODEL="fake",
        DATABASE_URL=f"sqlite:///{tmp_path}/records.db",
        OUTBOX_PATH=str(tmp_path / "outbox.db"),
        **extra,
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# The client's receive buffer fixed at 64 KiB. Left to itself, Linux grows a loopback client's
# buffer towards tcp_rmem's 32 MiB, where the answer then waits: a server that pulls the whole
# upstream would pass this test as well as one that waits for its reader.
SMALL_RECEIVE_BUFFER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)]


def _sysctl_max(name: str) -> int:
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[-1])


# The most the kernel can hold on the way from the fake to our stalled client: the fake's send
# buffer, the server's receive buffer from it (autotuned up to tcp_rmem's maximum), the
# server's send buffer to the client, and the client's fixed receive buffer (doubled).
KERNEL_BYTES = _sysctl_max("tcp_wmem") + _sysctl_max("tcp_rmem") + _sysctl_max("tcp_wmem") + 131072
# An answer well past that, so a server that pulls everything cannot look like one that waits.
ANSWER_BYTES = KERNEL_BYTES + 40_000_000


@pytest.mark.parametrize("grace", [0, 2], ids=["no-grace", "grace"])
@pytest.mark.parametrize("api", APIS)
async def test_a_reader_that_stops_reading_stops_the_upstream_and_leaving_closes_it(
    tmp_path: Path, api: str, grace: int
) -> None:
    """Leaving: with no resume grace the upstream closes at once; with one, the turn waits for a
    resume that long, pulling nothing more than before (the client's position stays parked),
    then closes."""
    answer_bytes = ANSWER_BYTES
    fake = FakeOpenAI(tokens=answer_bytes // (len(WORD) + 1))
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        env = env_for(
            upstream,
            tmp_path,
            api,
            MAX_ANSWER_CHARS=str(2 * answer_bytes),
            RESUME_GRACE_SECONDS=str(grace),
        )
        async with server_processes([env], tmp_path) as (server,):
            transport = httpx.AsyncHTTPTransport(socket_options=SMALL_RECEIVE_BUFFER)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=60, transport=transport
            ) as client:
                await client.post("/chat", json={"message": "warm up", "session_id": "w"})
                rss_before = rss_kib(server.process.pid)
                received = 0
                payload = {"message": WORD, "session_id": "slow"}
                async with client.stream("POST", "/chat", json=payload) as response:
                    # Kept, not dropped after the loop: a dropped iterator is finalized, which
                    # closes the connection, and the reader would have left, not stalled.
                    chunks = response.aiter_raw()
                    async for chunk in chunks:
                        received += len(chunk)
                        if received > 100_000:
                            break
                    await asyncio.sleep(3)  # the reader stops reading; the server must wait
                    pulled_while_stalled = fake.sent_bytes
                    await asyncio.sleep(1)
                    pulled_later = fake.sent_bytes
                    rss_growth_kib = rss_kib(server.process.pid) - rss_before
                    assert fake.open_streams == 1  # stalled, not gone
                closed_at = time.monotonic()
                await wait_for(lambda: fake.open_streams == 0, limit=5 + grace)
                noticed_after = time.monotonic() - closed_at
                pulled_in_all = fake.sent_bytes
                health = await client.get("/health")
    # Kernel socket buffers (the upstream's, ours, the client's) hold some megabytes; the rest
    # was never pulled, and the server itself holds almost none of it.
    assert pulled_while_stalled < KERNEL_BYTES + 10_000_000
    assert pulled_later - pulled_while_stalled < 1_000_000  # stalled, not trickling on
    assert rss_growth_kib < 16 * 1024
    assert grace * 0.75 <= noticed_after < grace + 5
    assert pulled_in_all < KERNEL_BYTES + 10_000_000  # nothing more pulled once it had left
    assert health.json()["status"] == "healthy"


async def test_with_the_read_ahead_unbounded_the_same_stalled_reader_lets_it_all_be_pulled(
    tmp_path: Path,
) -> None:
    """The control for the test above: the same stall with STREAM_READ_AHEAD_CHARS=0 pulls the
    whole answer into the server, so the measure above tells a waiting server from one that
    is not."""
    answer_bytes = ANSWER_BYTES
    fake = FakeOpenAI(tokens=answer_bytes // (len(WORD) + 1))
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        env = env_for(
            upstream,
            tmp_path,
            "chat_completions",
            MAX_ANSWER_CHARS=str(2 * answer_bytes),
            STREAM_READ_AHEAD_CHARS="0",
        )
        async with server_processes([env], tmp_path) as (server,):
            transport = httpx.AsyncHTTPTransport(socket_options=SMALL_RECEIVE_BUFFER)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=60, transport=transport
            ) as client:
                received = 0
                payload = {"message": WORD, "session_id": "slow"}
                async with client.stream("POST", "/chat", json=payload) as response:
                    chunks = response.aiter_raw()
                    async for chunk in chunks:
                        received += len(chunk)
                        if received > 100_000:
                            break
                    # The upstream sends it all and finishes, while the reader has taken 100 KB.
                    await wait_for(
                        lambda: fake.sent_bytes >= answer_bytes and fake.open_streams == 0,
                        limit=30,
                    )


@pytest.mark.parametrize("api", APIS)
async def test_max_answer_chars_ends_a_runaway_answer(tmp_path: Path, api: str) -> None:
    fake = FakeOpenAI(tokens=2_000)  # ~4 MB
    async with live_server(fake) as upstream:  # type: ignore[arg-type]
        env = env_for(upstream, tmp_path, api, MAX_ANSWER_CHARS="50000")
        async with server_processes([env], tmp_path) as (server,):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
                response = await client.post("/chat", json={"message": WORD, "session_id": "big"})
                await wait_for(lambda: fake.open_streams == 0, limit=5)
                after = await client.post(
                    "/chat", json={"message": "short now", "session_id": "big"}
                )
    blocks = without_ids(response.text).split("\n\n")
    errors = [json.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: error")]
    assert [e["code"] for e in errors] == ["answer_too_long"]
    assert response.text.endswith("data: [DONE]\n\n")
    text = sum(len(b) for b in blocks if b.startswith("data: w") or b.startswith("data:  w"))
    assert text < 100_000  # cut near the limit, not at the end of the answer
    assert after.status_code == 200 and "event: done" in after.text
