"""The benchmark: our /chat against a direct relay and the plain Agents SDK, in one run.

    uv run python -m bench            # the full run (a few minutes)
    uv run python -m bench --quick    # fewer requests, a ladder up to 300 streams

Every process runs on 127.0.0.1: a fake OpenAI upstream (tests/support/fake_openai.py,
Responses API, 200-token answers), one uvicorn worker per variant, and this load generator.
Loads are bounded in count and time. Prints a Markdown table (ratios are to the direct relay,
measured in the same run) and writes it to bench/last-run.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import StreamResult, stream_chat
from bench.request_cost import request_opening_ms

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 200
HOST = "127.0.0.1"


@dataclass
class Variant:
    name: str
    target: str  # uvicorn app path
    env: dict[str, str] = field(default_factory=dict)
    sessions: bool = False  # send a session id per request (our /chat keeps conversations)
    upstream: bool = False  # no server: the client reads the fake upstream itself (the floor)
    checkout: Path = ROOT  # where the server runs from (another checkout: an A/B of two builds)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def own_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_healthy(port: int, limit: float = 30) -> float:
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=1) as client:
        while time.perf_counter() - started < limit:
            try:
                if (await client.get(f"http://{HOST}:{port}/health")).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.01)
    raise RuntimeError(f"server on {port} did not start")


async def start_server(variant: Variant, upstream: str) -> tuple[Server, float]:
    port = free_port()
    env = {
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": upstream,
        "OPENAI_API": "responses",
        "MODEL": "fake",
        "TRACING": "off",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_MINUTE": "0",
        "MAX_MESSAGE_CHARS": "4000",
        "SUPABASE_URL": "",
        "SUPABASE_SERVICE_KEY": "",
        **variant.env,
    }
    process = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            variant.target,
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        variant.checkout,
    )
    cold = await wait_healthy(port)
    return Server(process, port), cold


async def control(upstream: str, **settings: Any) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(upstream.removesuffix("/v1") + "/_control", json=settings)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(server: Server, variant: Variant, count: int) -> dict[str, float]:
    results = []
    for n in range(count):
        session = f"lat-{n}" if variant.sessions else None
        results.append(
            await stream_chat(
                HOST, server.port, "hello there friend", session, upstream=variant.upstream
            )
        )
    ok = [r for r in results if r.ok]
    ttft = [r.ttft * 1000 for r in ok if r.ttft is not None]
    total = [r.total * 1000 for r in ok if r.total is not None]
    return {
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p99": pct(ttft, 0.99),
        "total_p50": pct(total, 0.5),
        "failed": len(results) - len(ok),
    }


async def saturation(
    server: Server, variant: Variant, concurrency: int, seconds: float, limit: int
) -> dict[str, float]:
    """Tokens per second with `concurrency` clients back to back, bounded in time and count."""
    results: list[StreamResult] = []
    started = time.perf_counter()
    cpu0 = server.cpu_seconds()
    counter = iter(range(limit))

    async def client() -> None:
        for n in counter:
            if time.perf_counter() - started > seconds:
                return
            session = f"sat-{n}" if variant.sessions else None
            results.append(
                await stream_chat(
                    HOST, server.port, "hello there friend", session, upstream=variant.upstream
                )
            )

    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    words = sum(r.words for r in results if r.ok)
    cpu = server.cpu_seconds() - cpu0
    return {
        "events_per_s": words / wall,
        "cpu_ms_per_1k_events": 1000 * cpu / max(words / 1000, 1e-9),
        "failed": sum(not r.ok for r in results),
        "streams": len(results),
    }


LADDER_TOKENS = 100
LADDER_GAP = 0.02
# The answer's ideal duration: its last token is due (tokens - 1) gaps after the first.
IDEAL_SECONDS = (LADDER_TOKENS - 1) * LADDER_GAP
HELD_TTFT_P99_MS = 250
HELD_DURATION_SLACK = 0.10


async def hold(server: Server, variant: Variant, streams: int) -> dict[str, Any]:
    """`streams` answers of 100 tokens at 20 ms gaps (paced on an absolute schedule by the fake),
    opened over one second: what a resident feels at this load. "Held": every admitted stream
    ended with [DONE], TTFT p99 <= 250 ms, duration p99 <= the ideal + 10%."""

    async def one(n: int) -> StreamResult:
        await asyncio.sleep(n / streams)  # open them over one second
        session = f"hold-{streams}-{n}" if variant.sessions else None
        return await stream_chat(
            HOST,
            server.port,
            "hello there friend",
            session,
            keep_times=True,
            upstream=variant.upstream,
        )

    cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
    async with asyncio.timeout(90):
        results = await asyncio.gather(*(one(n) for n in range(streams)))
    cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    statuses: dict[str, int] = {}
    for r in results:
        status = "200" if r.error is None else (r.error.split(" ")[1:2] or [r.error])[0]
        statuses[status] = statuses.get(status, 0) + 1
    admitted = [r for r in results if r.error is None or not r.error.startswith("HTTP/")]
    done = [r for r in admitted if r.ok]
    ttft = [r.ttft * 1000 for r in done if r.ttft is not None]
    duration = [r.total for r in done if r.total is not None]
    gaps = [gap * 1000 for r in done for gap in r.gaps()]
    row = {
        "streams": streams,
        "admitted": len(admitted),
        "done": len(done),
        "statuses": statuses,
        "ttft_p50": pct(ttft, 0.5),
        "ttft_p99": pct(ttft, 0.99),
        "duration_p50": pct(duration, 0.5),
        "duration_p99": pct(duration, 0.99),
        "gap_p99": pct(gaps, 0.99),
        "cpu_percent": 100 * cpu,
        "rss_mib": server.rss_mib(),
    }
    row["held"] = (
        len(done) == len(admitted) > 0
        and row["ttft_p99"] <= HELD_TTFT_P99_MS
        and row["duration_p99"] <= IDEAL_SECONDS * (1 + HELD_DURATION_SLACK)
    )
    return row


async def idle_session_kib(count: int = 10_000) -> dict[str, float]:
    """Memory per idle conversation (two stored messages): ours, and the SDK's SQLiteSession."""
    from agents import SQLiteSession

    from townhall.sessions.registry import SessionRegistry

    items = [
        {"role": "user", "content": "Pothole on Main Street"},
        {"role": "assistant", "content": "Thanks, I have noted it."},
    ]

    async def measure(make: Any) -> float:
        # Resident memory, not tracemalloc: SQLite's own allocations are invisible to the latter.
        gc.collect()
        before = own_rss_kib()
        kept = await make()
        gc.collect()
        grown = own_rss_kib() - before
        del kept
        return grown / count

    async def ours() -> Any:
        registry = SessionRegistry(max_sessions=count, ttl_seconds=3600)
        for n in range(count):
            conversation = registry.begin_turn(f"s{n}")
            await conversation.history.add_items([dict(i) for i in items])
            registry.end_turn(conversation, completed=True)
        return registry

    async def sdk() -> Any:
        sessions = []
        for n in range(count):
            session = SQLiteSession(f"s{n}")
            await session.add_items([dict(i) for i in items])
            sessions.append(session)
        return sessions

    return {"ours": await measure(ours), "sqlite_session": await measure(sdk)}


UNCAPPED = {"MAX_CONCURRENT_TURNS": "0"}  # to find where a worker stops holding
CHAT_COMPLETIONS = {"OPENAI_API": "chat_completions"}
VARIANTS = [
    Variant("direct relay (baseline)", "bench.variants:relay"),
    Variant("plain Agents SDK", "bench.variants:plain_sdk"),
    Variant(
        "our /chat, stock decoder", "api:app", {"LEAN_STREAM": "false", **UNCAPPED}, sessions=True
    ),
    Variant("our /chat", "api:app", UNCAPPED, sessions=True),
    Variant("our /chat, Chat Completions", "api:app", CHAT_COMPLETIONS | UNCAPPED, sessions=True),
    # The default MAX_CONCURRENT_TURNS: past it, turns get 503 before their stream starts.
    Variant("our /chat, admission on", "api:app", sessions=True),
    Variant(
        "our /chat, Chat Completions, admission on", "api:app", CHAT_COMPLETIONS, sessions=True
    ),
    # The machine's floor: the load generator reads the fake upstream's own stream (the fake's
    # process is the "server" in its columns). A level the floor cannot hold, nothing can here.
    Variant("floor: client straight to the fake", "", upstream=True),
]


async def run(quick: bool) -> str:
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"townhall-bench-{os.getpid()}"
    data.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS[2:]:  # the /chat variants: their own record files
        variant.env |= {
            "DATABASE_URL": f"sqlite:///{data}/t.db",
            "OUTBOX_PATH": str(data / "o.db"),
            "MAX_SESSIONS": "100000",
        }
    fake_port = free_port()
    fake = spawn(
        [
            sys.executable,
            "tests/support/fake_openai.py",
            "--port",
            str(fake_port),
            "--tokens",
            str(TOKENS),
        ],
        {},
    )
    upstream = f"http://{HOST}:{fake_port}/v1"
    ladder = [50, 150, 300] if quick else [50, 100, 150, 300, 500, 1000]
    rows: dict[str, dict[str, Any]] = {}
    try:
        await wait_healthy_fake(fake_port)
        for variant in VARIANTS:
            await control(upstream, tokens=TOKENS, delay=0)
            if variant.upstream:
                server, cold = Server(fake, fake_port), 0.0
            else:
                server, cold = await start_server(variant, upstream)
            try:
                row: dict[str, Any] = {"cold_start_s": cold}
                await latency(server, variant, 10)  # warm-up
                row |= await latency(server, variant, 30 if quick else 100)
                row |= await saturation(server, variant, 32, 5 if quick else 10, 20_000)
                await control(upstream, tokens=LADDER_TOKENS, delay=LADDER_GAP)
                for streams in ladder:
                    row[f"hold_{streams}"] = await hold(server, variant, streams)
                row["rss_mib"] = server.rss_mib()
            finally:
                if not variant.upstream:
                    server.process.terminate()
                    server.process.wait(timeout=20)
            rows[variant.name] = row
        memory = await idle_session_kib(2000 if quick else 10_000)
        opening = await request_opening_ms(rounds=3 if quick else 6)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    return render(rows, memory, opening, ladder, quick)


async def wait_healthy_fake(port: int) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(500):
            try:
                await client.post(f"http://{HOST}:{port}/_control", json={})
                return
            except httpx.TransportError:
                await asyncio.sleep(0.02)
    raise RuntimeError("fake upstream did not start")


def render(
    rows: dict[str, dict[str, Any]],
    memory: dict[str, float],
    opening: dict[str, float],
    ladder: list[int],
    quick: bool,
) -> str:
    base = rows[VARIANTS[0].name]
    names = list(rows)
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def line(label: str, key: str, fmt: str, ratio: bool = True) -> None:
        cells = []
        for name in names:
            value = rows[name][key]
            cell = format(value, fmt)
            if ratio and name != names[0] and base[key]:
                cell += f" ({value / base[key]:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    line("time to first token p50 (ms)", "ttft_p50", ".1f")
    line("time to first token p99 (ms)", "ttft_p99", ".1f")
    line(f"total time, {TOKENS}-token answer, p50 (ms)", "total_p50", ".1f")
    line("events/s at saturation (32 clients)", "events_per_s", ",.0f")
    line("server CPU per 1,000 events (ms)", "cpu_ms_per_1k_events", ".1f")
    line("server resident memory after the run (MiB)", "rss_mib", ".0f", ratio=False)
    line("cold start to first /health (s)", "cold_start_s", ".2f", ratio=False)
    lines.append(
        f"| memory per idle session (KiB) | - | SQLiteSession: "
        f"{memory['sqlite_session']:.1f} | {memory['ours']:.2f} |"
    )
    lines += [
        "",
        "CPU to open one Responses request (client + a recording server in one process, "
        f"alternated): the client's `responses.create()` {opening['sdk_create']:.2f} ms, ours "
        f"without its parameter transform {opening['untransformed']:.2f} ms "
        f"({opening['untransformed'] / opening['sdk_create']:.2f}x).",
    ]
    lines += ["", *ladder_table(rows, ladder)]
    header = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        f", {platform.system()} {platform.release()}; one uvicorn worker per variant; fake upstream"
        f" and load generator on the same machine. Command: `uv run python -m bench"
        f"{' --quick' if quick else ''}`.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def ladder_table(rows: dict[str, dict[str, Any]], ladder: list[int]) -> list[str]:
    """Every load step as a resident feels it, and the last step each variant held."""
    out = [
        f"Load ladder: {LADDER_TOKENS}-token answers at {LADDER_GAP * 1000:.0f} ms gaps (ideal "
        f"{IDEAL_SECONDS:.2f} s), N streams opened over one second. Held = every admitted stream "
        f"ends with [DONE], TTFT p99 <= {HELD_TTFT_P99_MS} ms, duration p99 <= ideal + "
        f"{HELD_DURATION_SLACK:.0%}.",
        "",
        "| variant | streams | [DONE] / admitted | statuses | TTFT p50 / p99 (ms) "
        "| duration p50 / p99 (s) | receive gap p99 (ms) | server CPU | server RSS (MiB) | held |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    knees = []
    for name, row in rows.items():
        knee, unbroken = None, True
        for streams in ladder:
            step = row[f"hold_{streams}"]
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(step["statuses"].items()))
            out.append(
                f"| {name} | {streams} | {step['done']} / {step['admitted']} | {statuses} "
                f"| {step['ttft_p50']:.0f} / {step['ttft_p99']:.0f} "
                f"| {step['duration_p50']:.2f} / {step['duration_p99']:.2f} "
                f"| {step['gap_p99']:.0f} | {step['cpu_percent']:.0f}% | {step['rss_mib']:.0f} "
                f"| {'yes' if step['held'] else 'no'} |"
            )
            unbroken = unbroken and step["held"]
            if unbroken:
                knee = streams
        knees.append(f"- {name}: {'none held' if knee is None else f'{knee} streams'}")
    return [*out, "", "Knee (the last level held, with every level below it held):", *knees]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    table = asyncio.run(run(args.quick))
    print(table)
    (ROOT / "bench" / "last-run.md").write_text(table)


if __name__ == "__main__":
    main()
