"""What Redis sessions add to time to first token: the same /chat server twice, sessions in
memory and in Redis, against one fake upstream, alternated in rounds in one run (the machine is
shared: compare within a round). Needs Redis: its URL from TEST_REDIS_URL (database 14 is used
and emptied).

    TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python -m bench.redis_ttft
"""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis

from bench.__main__ import HOST, Variant, free_port, latency, spawn, start_server, wait_healthy_fake

ROUNDS = 3
ANSWERS = 100


def redis_url() -> str:
    base = os.environ.get("TEST_REDIS_URL")
    if not base:
        sys.exit("set TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/14"))


async def run() -> str:
    url = redis_url()
    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    port = free_port()
    fake = spawn(
        [sys.executable, "tests/support/fake_openai.py", "--port", str(port), "--tokens", "200"], {}
    )
    data = f"/tmp/townhall-redis-bench-{os.getpid()}"
    os.makedirs(data, exist_ok=True)
    base = {"DATABASE_URL": f"sqlite:///{data}/t.db", "OUTBOX_PATH": f"{data}/o.db"}
    variants = [
        Variant("sessions in memory", "api:app", base, sessions=True),
        Variant("sessions in Redis", "api:app", {**base, "SESSION_STORE": url}, sessions=True),
    ]
    servers = []
    lines = [
        f"Time to first token, {ANSWERS} answers one after another per round (ms):",
        "",
        "| round | memory p50 | Redis p50 | Redis - memory (p50) | memory p99 | Redis p99 |",
        "|---|---|---|---|---|---|",
    ]
    try:
        await wait_healthy_fake(port)
        for variant in variants:
            server, _ = await start_server(variant, f"http://{HOST}:{port}/v1")
            servers.append(server)
            await latency(server, variant, 20)  # warm-up
        for round_ in range(1, ROUNDS + 1):
            memory, in_redis = [
                await latency(server, variant, ANSWERS)
                for variant, server in zip(variants, servers, strict=True)
            ]
            lines.append(
                f"| {round_} | {memory['ttft_p50']:.1f} | {in_redis['ttft_p50']:.1f} "
                f"| {in_redis['ttft_p50'] - memory['ttft_p50']:+.1f} | {memory['ttft_p99']:.1f} "
                f"| {in_redis['ttft_p99']:.1f} |"
            )
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=20)
        fake.terminate()
        fake.wait(timeout=10)
    return "\n".join(lines)


if __name__ == "__main__":
    print(asyncio.run(run()))
