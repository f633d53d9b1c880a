"""The fast path for the SDK's agent identity map (townhall/turns/agent_graph.py) gives what the
SDK's own builder gives, for our roster and for a graph with a repeated name, and the SDK's
per-turn callers use it."""

from __future__ import annotations

import agents._run_state_agent_identity as identity
from agents import Agent, ModelSettings, function_tool, handoff
from agents.testing import ScriptedModel

from agents_def import build_agents
from townhall.turns.agent_graph import fast_identity_map, install_fast_identity_map


def sdk_builder():  # the SDK's own, whether or not the fast path is installed
    builder = identity._build_agent_identity_map
    return getattr(builder, "__wrapped__", builder)


def test_our_roster_maps_as_the_sdk_maps_it() -> None:
    roster = build_agents(ScriptedModel([]), ModelSettings(temperature=0.2))
    for start in roster.by_name.values():  # a conversation may continue with any desk
        expected = sdk_builder()(start)
        got = fast_identity_map(sdk_builder())(start)
        assert list(got.items()) == list(expected.items())  # same keys, agents and order
    assert len(roster.by_name) >= 3


@function_tool
def lookup(reference: str) -> str:
    """Look a report up."""
    return reference


def test_a_repeated_name_goes_to_the_sdk_builder() -> None:
    # Two different agents named "Desk": only the SDK's signatures tell them apart ("Desk#2").
    plain = Agent(name="Desk", instructions="one")
    tooled = Agent(name="Desk", instructions="two", tools=[lookup])
    start = Agent(name="Start", handoffs=[plain, handoff(tooled, tool_name_override="to_tooled")])
    expected = sdk_builder()(start)
    got = fast_identity_map(sdk_builder())(start)
    assert "Desk#2" in expected
    assert list(got.items()) == list(expected.items())


def test_the_sdk_keys_come_from_the_fast_path() -> None:
    assert install_fast_identity_map()
    assert install_fast_identity_map()  # idempotent: wrapped once
    builder = identity._build_agent_identity_map
    assert builder.__wrapped__ is sdk_builder()
    assert not hasattr(builder.__wrapped__, "__wrapped__")

    calls = []
    original_signature = identity._agent_identity_signature
    identity._agent_identity_signature = lambda agent: calls.append(agent) or ""
    try:
        roster = build_agents(ScriptedModel([]))
        keys = identity._build_agent_identity_keys_by_id(roster.first)
    finally:
        identity._agent_identity_signature = original_signature
    assert keys == {id(agent): name for name, agent in roster.by_name.items()}
    assert calls == []  # no signature computed for a graph of unique names
