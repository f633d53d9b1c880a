"""What keeping frames for a resume costs at saturation: the same /chat server with resumable
streams off and on, sessions in memory and in Redis (frames mirrored there), against one fake
upstream, in rounds in one run (the machine is shared: compare within a round). 32 clients
back to back, each answer 200 tokens as fast as the fake sends. Needs Redis: its URL from
TEST_REDIS_URL (database 14 is used and emptied).

    TEST_REDIS_URL=redis://127.0.0.1:6379/0 uv run python -m bench.resume_cost
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as redis

from bench.__main__ import (
    HOST,
    Variant,
    free_port,
    saturation,
    spawn,
    start_server,
    wait_healthy_fake,
)
from bench.redis_ttft import redis_url

ROUNDS = 3
SECONDS = 8.0
CLIENTS = 32


async def run() -> str:
    url = redis_url()
    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    port = free_port()
    fake = spawn(
        [sys.executable, "tests/support/fake_openai.py", "--port", str(port), "--tokens", "200"], {}
    )
    data = f"/tmp/townhall-resume-bench-{os.getpid()}"
    os.makedirs(data, exist_ok=True)
    base = {
        "DATABASE_URL": f"sqlite:///{data}/t.db",
        "OUTBOX_PATH": f"{data}/o.db",
        "MAX_CONCURRENT_TURNS": "0",
    }
    in_redis = {**base, "SESSION_STORE": url}
    variants = [
        Variant("memory, resume off", "api:app", {**base, "RESUME_STREAMS": "false"}, True),
        Variant("memory, resume on", "api:app", base, True),
        Variant("Redis, resume off", "api:app", {**in_redis, "RESUME_STREAMS": "false"}, True),
        Variant("Redis, resume on (frames in Redis)", "api:app", in_redis, True),
    ]
    lines = [
        f"Events/s at saturation ({CLIENTS} clients, {SECONDS:.0f} s per variant per round), "
        "and server CPU per 1,000 events:",
        "",
        "| round | variant | events/s | CPU ms / 1k events | on / off (events/s) |",
        "|---|---|---|---|---|",
    ]
    servers = []
    try:
        await wait_healthy_fake(port)
        for variant in variants:
            server, _ = await start_server(variant, f"http://{HOST}:{port}/v1")
            servers.append(server)
            await saturation(server, variant, 8, 2.0, 2_000)  # warm-up
        for round_ in range(1, ROUNDS + 1):
            rows = []
            for variant, server in zip(variants, servers, strict=True):
                rows.append(await saturation(server, variant, CLIENTS, SECONDS, 100_000))
            for i, (variant, row) in enumerate(zip(variants, rows, strict=True)):
                ratio = ""
                if i % 2 == 1:
                    ratio = f"{row['events_per_s'] / rows[i - 1]['events_per_s']:.2f}"
                failed = f" ({row['failed']} failed)" if row["failed"] else ""
                lines.append(
                    f"| {round_} | {variant.name} | {row['events_per_s']:,.0f}{failed} "
                    f"| {row['cpu_ms_per_1k_events']:.1f} | {ratio} |"
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
