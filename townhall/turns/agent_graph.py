"""A fast path for the Agents SDK's agent identity map, which it builds anew on every turn.

The SDK names every agent reachable from the starting one (handoffs, agents as tools) with a
stable identity: twice per turn (the sandbox runtime's resume keys, the tool-use tracker's
snapshot) and again per step that calls a tool. To tell apart agents that share a name it
sorts each name's group by a JSON signature of the agent's whole configuration (instructions,
model settings, every tool and handoff), and it computes that signature even for a group of
one. With the triage agent and its desks that was 14% of a one-token turn's CPU here
(py-spy, bench/turn_cost.py), paid again by every turn that starts in a burst.

When every reachable agent has its own name the SDK's map is name -> agent, in graph order
(each group has one agent and keeps the name), so the fast path returns exactly that without
signatures; a graph with a repeated name goes to the SDK's own builder. The SDK's other
callers (`_build_agent_identity_keys_by_id`, which both per-turn callers use) look the builder
up in its module at call time, so replacing it there is enough; the direct imports of it
(restoring a serialized run state) keep the original, which gives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import agents._run_state_agent_identity as identity

IdentityMap = dict[str, Any]


def fast_identity_map(original: Callable[[Any], IdentityMap]) -> Callable[[Any], IdentityMap]:
    iter_graph = identity._iter_agent_graph

    def build(initial_agent: Any) -> IdentityMap:
        by_name: IdentityMap = {}
        for agent in iter_graph(initial_agent):
            if agent.name in by_name:
                return original(initial_agent)  # a repeated name: the SDK tells them apart
            by_name[agent.name] = agent
        return by_name

    build.__wrapped__ = original  # type: ignore[attr-defined]
    return build


def install_fast_identity_map() -> bool:
    """Put the fast path in front of the SDK's builder (idempotent). False when this SDK
    version has no such builder (then nothing is changed)."""
    original = getattr(identity, "_build_agent_identity_map", None)
    if original is None or not hasattr(identity, "_iter_agent_graph"):
        return False
    if not hasattr(original, "__wrapped__"):
        identity._build_agent_identity_map = fast_identity_map(original)  # type: ignore[assignment]
    return True
