"""What one turn costs the server before and around its tokens: server CPU per answer of one
token, so nearly all of it is the turn's set-up and end (the request, the session, the Agents
SDK's run, the model request, the SSE response), next to the direct relay and the plain Agents
SDK, in rounds in one run (the machine is shared: compare within a round).

This is the cost that decides how many turns may start at once: a burst of N starts takes
N times it before the last of them sees its first token.

    uv run python -m bench.turn_cost
    uv run python -m bench.turn_cost --against /tmp/base   # also our /chat from another checkout
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.__main__ import (
    CHAT_COMPLETIONS,
    HOST,
    UNCAPPED,
    Server,
    Variant,
    control,
    free_port,
    latency,
    spawn,
    start_server,
    wait_healthy_fake,
)
from bench.loadgen import stream_chat

ROUNDS = 3
TURNS = 400
CLIENTS = 4  # a few at a time: the server is busy, never overloaded


def variants(against: Path | None) -> list[Variant]:
    ours = [
        Variant("our /chat", "api:app", dict(UNCAPPED), sessions=True),
        Variant(
            "our /chat, Chat Completions", "api:app", CHAT_COMPLETIONS | UNCAPPED, sessions=True
        ),
    ]
    chosen = [
        Variant("direct relay (baseline)", "bench.variants:relay"),
        Variant("plain Agents SDK", "bench.variants:plain_sdk"),
        *ours,
    ]
    if against is not None:
        chosen += [replace(v, name=f"{v.name} at {against}", checkout=against) for v in ours]
    return chosen


async def cpu_per_turn(server: Server, variant: Variant, turns: int, tag: str) -> float:
    """Server CPU (ms) per one-token answer, CLIENTS clients back to back."""
    counter = iter(range(turns))
    failed = 0

    async def client() -> None:
        nonlocal failed
        for n in counter:
            session = f"turn-cost-{tag}-{n}" if variant.sessions else None
            result = await stream_chat(HOST, server.port, "hello there friend", session)
            failed += not result.ok

    cpu0 = server.cpu_seconds()
    async with asyncio.timeout(120):
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    if failed:
        raise RuntimeError(f"{variant.name}: {failed} of {turns} turns failed")
    return 1000 * (server.cpu_seconds() - cpu0) / turns


async def run(against: Path | None, rounds: int, turns: int) -> str:
    port = free_port()
    fake = spawn([sys.executable, "tests/support/fake_openai.py", "--port", str(port)], {})
    upstream = f"http://{HOST}:{port}/v1"
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"townhall-turn-cost-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    chosen = variants(against)
    servers: list[Server] = []
    try:
        await wait_healthy_fake(port)
        await control(upstream, tokens=1, delay=0)
        for n, variant in enumerate(chosen):
            if variant.target == "api:app":
                variant.env |= {
                    "DATABASE_URL": f"sqlite:///{data}/t{n}.db",
                    "OUTBOX_PATH": str(data / f"o{n}.db"),
                    "MAX_SESSIONS": "100000",
                }
            server, _ = await start_server(variant, upstream)
            servers.append(server)
            await latency(server, variant, 30)  # warm-up
        results: dict[str, list[float]] = {v.name: [] for v in chosen}
        stamp = time.strftime("%H%M%S")
        for round_ in range(rounds):
            for variant, server in zip(chosen, servers, strict=True):
                tag = f"{stamp}-{round_}"
                results[variant.name].append(await cpu_per_turn(server, variant, turns, tag))
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=20)
        fake.terminate()
        fake.wait(timeout=10)
    relay = results["direct relay (baseline)"]
    head = " | ".join(f"round {r + 1}" for r in range(rounds))
    lines = [
        f"Server CPU per one-token answer (ms), {turns} answers per round, {CLIENTS} clients; "
        "in brackets the ratio to the relay in the same round:",
        "",
        f"| variant | {head} |",
        "|---|" + "---|" * rounds,
    ]
    for name, values in results.items():
        cells = " | ".join(f"{v:.2f} ({v / r:.2f}x)" for v, r in zip(values, relay, strict=True))
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout's our /chat, for an A/B")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--turns", type=int, default=TURNS)
    args = parser.parse_args()
    against = args.against.resolve() if args.against else None
    print(asyncio.run(run(against, args.rounds, args.turns)))


if __name__ == "__main__":
    main()
