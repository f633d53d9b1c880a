"""Which agent answers a conversation's next message: the one its last handoff went to.

The Agents SDK keeps a handoff in the history as a call of the handoff's tool
(`transfer_to_incident_desk`) and its output, `{"assistant": "<agent name>"}`, so the history
alone says who answers now: the agent named by the last such output, or the agent residents
meet first if there was none. (Not the last call: when a model calls two handoffs at once the
SDK follows the first, and answers the other "Multiple handoffs detected, ignoring this one.")
Nothing else has to be stored, and every session store (and a protocol that keeps its own
items) works the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents import Agent, Handoff
from agents.handoffs import handoff as make_handoff


@dataclass(frozen=True)
class AgentRoster:
    first: Agent[Any]  # who residents meet (triage)
    by_handoff_tool: Mapping[str, Agent[Any]]  # "transfer_to_incident_desk" -> the desk
    by_name: Mapping[str, Agent[Any]]

    @classmethod
    def of(cls, first: Agent[Any]) -> AgentRoster:
        """Every agent reachable from `first` through handoffs."""
        by_tool: dict[str, Agent[Any]] = {}
        by_name: dict[str, Agent[Any]] = {first.name: first}
        waiting = [first]
        while waiting:
            for target in waiting.pop().handoffs:
                handoff = target if isinstance(target, Handoff) else make_handoff(target)
                agent = target if isinstance(target, Agent) else _agent_of(handoff)
                if agent is None:
                    continue
                by_tool[handoff.tool_name] = agent
                if agent.name not in by_name:
                    by_name[agent.name] = agent
                    waiting.append(agent)
        return cls(first, by_tool, by_name)

    @property
    def agents(self) -> list[Agent[Any]]:
        return list(self.by_name.values())

    def tool_names(self) -> set[str]:
        """Every function tool's and handoff's name, across the agents."""
        own = {tool.name for agent in self.agents for tool in agent.tools if hasattr(tool, "name")}
        return own | set(self.by_handoff_tool)

    def answering(self, items: Iterable[Any]) -> Agent[Any]:
        """The agent that answers after `items` (a conversation's history, oldest first)."""
        handoff_calls: set[Any] = set()
        last = self.first
        for item in items:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call" and item.get("name") in self.by_handoff_tool:
                handoff_calls.add(item.get("call_id"))
            elif item.get("type") == "function_call_output" and item.get("call_id") in (
                handoff_calls
            ):
                last = self.by_name.get(_handed_to(item.get("output")) or "", last)
        return last


def _handed_to(output: Any) -> str | None:
    """The agent a handoff's output names (`{"assistant": name}`), if it names one."""
    try:
        named = json.loads(output) if isinstance(output, str) else None
    except ValueError:
        return None
    agent = named.get("assistant") if isinstance(named, dict) else None
    return agent if isinstance(agent, str) else None


def _agent_of(handoff: Handoff[Any, Any]) -> Agent[Any] | None:
    """The agent a Handoff object made with `handoff(agent)` goes to (held weakly by the SDK)."""
    ref = handoff._agent_ref
    agent = ref() if ref is not None else None
    return agent if isinstance(agent, Agent) else None
