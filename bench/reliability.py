"""Reliability run: many residents filing reports while the model upstream misbehaves, the record
store goes down now and then, and some residents hang up mid-answer. Prints a table of what was
tried and injected, and what was written, lost (must be 0) and left open (must be 0).

    uv run python -m bench.reliability [--requests 300] [--concurrency 20] [--seed 7]
        [--skip-processes]

Everything runs on 127.0.0.1 in this process: a fake OpenAI-compatible upstream (Responses API)
that answers "REPORT: ..." with a report_incident call, a PostgREST double standing in for
Supabase, and the server itself under uvicorn. Bounded in count and time; exits non-zero if a
record was lost or a stream was left open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from api import create_app
from bench.process_faults import (
    health_during_a_big_answer,
    kill_9_while_filing,
    sigterm_with_live_streams,
    slow_reader_memory,
    stalled_reader,
)
from tests.support.app import live_server, make_settings
from tests.support.fake_openai import FAULTS, FakeOpenAI
from tests.support.postgrest_double import PostgRESTDouble

SERVICE_KEY = "sb_secret_reliability_run"
TIME_LIMIT_SECONDS = 300


@dataclass
class Outcome:
    status: int = 0
    hung_up: bool = False
    ended_well: bool = False
    errors: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


async def resident(client: httpx.AsyncClient, n: int, hang_up: bool) -> Outcome:
    outcome = Outcome(hung_up=hang_up)
    payload = {"message": f"REPORT: broken pavement number {n}", "session_id": f"resident-{n}"}
    async with client.stream("POST", "/chat", json=payload) as response:
        outcome.status = response.status_code
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
                if event == "tool_result":
                    output = json.loads(data)["output"]
                    if isinstance(output, dict) and "reference" in output:
                        outcome.references.append(output["reference"])
                    if hang_up:
                        return outcome  # the resident leaves right after the tool ran
                elif event == "error":
                    outcome.errors.append(json.loads(data)["code"])
                elif data == "[DONE]":
                    outcome.ended_well = True
                event = None
    return outcome


async def outages(double: PostgRESTDouble, stop: asyncio.Event, windows: list[int]) -> None:
    """The record store answers 503 for 1.5 s out of every 4 s, starting half a second in."""
    await asyncio.sleep(0.5)
    while not stop.is_set():
        double.fail_status = 503
        windows.append(1)
        await asyncio.sleep(1.5)
        double.fail_status = None
        await asyncio.sleep(2.5)


def handed_out(fake: FakeOpenAI) -> set[str]:
    """Every reference a tool gave out, as the model heard it (this covers residents who left)."""
    references = set()
    for request in fake.requests:
        for item in request.get("input", []):
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                output = item.get("output")
                try:
                    parsed = json.loads(output) if isinstance(output, str) else {}
                except ValueError:
                    continue
                if isinstance(parsed, dict) and "reference" in parsed:
                    references.add(parsed["reference"])
    return references


async def run(requests: int, concurrency: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    fake = FakeOpenAI(tokens=30, delay=0.002)
    # About one model request in four fails, in each of the ways a real upstream does.
    fake.faults.extend(
        rng.choice([*FAULTS, "", "", "", "", "", "", "", "", "", "", "", "", "", "", ""])
        for _ in range(requests * 4)
    )
    double = PostgRESTDouble(SERVICE_KEY)
    data = Path(tempfile.mkdtemp(prefix="townhall-reliability-"))
    stop, windows = asyncio.Event(), []
    async with (
        live_server(fake) as upstream,  # type: ignore[arg-type]
        live_server(double.app()) as supabase,  # type: ignore[arg-type]
    ):
        settings = make_settings(
            openai_api_key="sk-fake",
            openai_base_url=f"{upstream}/v1",
            openai_api="responses",
            model="fake",
            model_timeout_seconds=1,
            model_max_retries=2,
            supabase_url=supabase,
            supabase_service_key=SERVICE_KEY,
            store_timeout_seconds=1,
            outbox_retry_seconds=0.1,
            outbox_retry_max_seconds=0.5,
            rate_limit_per_minute=0,
            database_url=f"sqlite:///{data}/threads.db",
            outbox_path=str(data / "outbox.db"),
            log_level="CRITICAL",
        )
        app = create_app(settings)
        async with live_server(app) as base_url:
            outage_task = asyncio.create_task(outages(double, stop, windows))
            limits = httpx.Limits(max_connections=concurrency)
            gate = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:

                async def one(n: int) -> Outcome:
                    async with gate:
                        return await resident(client, n, hang_up=rng.random() < 0.15)

                started = time.perf_counter()
                async with asyncio.timeout(TIME_LIMIT_SECONDS):
                    outcomes = await asyncio.gather(*(one(n) for n in range(requests)))
                elapsed = time.perf_counter() - started
            stop.set()
            await outage_task
            double.fail_status = None
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                for _ in range(300):  # the outbox drains (60 s at most)
                    health = (await client.get("/health")).json()
                    if health["checks"]["outbox"]["detail"]["depth"] == 0:
                        break
                    await asyncio.sleep(0.2)
                busy = sum(s["busy"] for s in (await client.get("/sessions")).json()["sessions"])
                health = (await client.get("/health")).json()
        await asyncio.sleep(0.5)
        open_upstream = fake.open_streams
    stored = [row["reference"] for row in double.rows["incidents"]]
    given = handed_out(fake) | {ref for o in outcomes for ref in o.references}
    unfinished = sum(1 for o in outcomes if not o.hung_up and not o.ended_well)
    return {
        "requests tried": requests,
        "residents who hung up mid-answer": sum(o.hung_up for o in outcomes),
        **{f"upstream faults injected: {kind}": fake.faults_injected[kind] for kind in FAULTS},
        "record-store outage windows (503 for 1.5 s)": len(windows),
        "streams that ended with an error event, then [DONE]": sum(
            bool(o.errors) for o in outcomes
        ),
        "references handed to residents": len(given),
        "records written": len(stored),
        "of which went through the outbox first": app.state.services.desk.counters["queued"],
        "records lost": len(given - set(stored)),
        "duplicate records": len(stored) - len(set(stored)),
        "streams left open (client, server, upstream)": unfinished + busy + open_upstream,
        "health afterwards": health["status"],
        "wall time (s)": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--skip-processes", action="store_true", help="only the in-process part (no SIGTERM, kill)"
    )
    args = parser.parse_args()
    # The fake upstream's injected cuts are logged by uvicorn as errors: expected noise here.
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    results = asyncio.run(run(args.requests, args.concurrency, args.seed))
    if not args.skip_processes:
        results |= asyncio.run(sigterm_with_live_streams())
        results |= asyncio.run(kill_9_while_filing())
        results |= asyncio.run(health_during_a_big_answer())
        results |= asyncio.run(stalled_reader())
        results |= asyncio.run(slow_reader_memory())
    print("| measure | value |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value} |")
    failed = (
        results["records lost"]
        or results["streams left open (client, server, upstream)"]
        or results.get("kill -9: records lost", 0)
        or results.get("SIGTERM: streams cut without [DONE]", 0)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
