"""A short reliability run (`python -m bench.reliability`): upstream faults, store outages and
residents hanging up, and still no record lost and no stream left open."""

from __future__ import annotations

from bench import reliability


async def test_nothing_lost_and_nothing_left_open_under_faults() -> None:
    results = await reliability.run(requests=80, concurrency=10, seed=3)
    injected = sum(v for k, v in results.items() if k.startswith("upstream faults injected"))
    assert injected >= 10
    assert results["records written"] >= 40
    assert results["of which went through the outbox first"] >= 1
    assert results["records lost"] == 0
    assert results["duplicate records"] == 0
    assert results["streams left open (client, server, upstream)"] == 0
    assert results["health afterwards"] == "healthy"
