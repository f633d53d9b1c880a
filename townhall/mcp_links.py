"""Tools from MCP servers (MCP_SERVER_URL), through the Agents SDK's MCPServerStreamableHttp,
kept connected in the background so that a server that is down never stops the server or a turn.

Each server has one link: a task that connects (the SDK's client opens its streams in a task
group, so connecting and closing happen in that one task), lists the tools once to fill the
SDK's cache, then checks that the server answers (a tools/list request) every so often, and at
once after a call failed. A server that does not answer is closed and reconnected with backoff;
its tool list is fetched anew on reconnect. Every agent holds every link's server in
`mcp_servers`; a server that is down offers no tools (`LinkedServer.list_tools`), so a turn runs
on without them. A failed call becomes a tool message the model can explain
(`MCPLinks.tool_failure`), never a crash, and every MCP request is bounded by
MCP_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from agents import RunContextWrapper
from agents.exceptions import UserError
from agents.mcp import MCPServerStreamableHttp
from mcp.types import CallToolResult
from mcp.types import Tool as MCPTool

from townhall.settings import Settings

logger = logging.getLogger(__name__)

CHECK_SECONDS = 15.0  # how often a connected server is checked
RETRY_BASE_SECONDS = 0.5
START_WAIT_EXTRA_SECONDS = 1.0  # start-up waits for each first attempt: its timeout plus this

LinkState = Literal["connecting", "up", "down"]


def server_label(url: str) -> str:
    """A server's name in logs and /health: host, port and path, never credentials or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


class ToolResultTooLarge(UserError):
    """An MCP tool answered more than MCP_MAX_RESULT_CHARS: it would be sent to the model again
    on every later turn of the conversation."""

    def __init__(self, tool: str, size: int, limit: int) -> None:
        super().__init__(f"the result of {tool} has {size} characters (limit {limit})")
        self.size = size
        self.limit = limit


def result_size(result: CallToolResult) -> int:
    """Characters a result would put in the conversation: its text, data and structured part."""
    structured = result.structured_content
    size = len(json.dumps(structured)) if structured else 0
    for part in result.content:
        size += len(getattr(part, "text", "") or "") + len(getattr(part, "data", "") or "")
    return size


class LinkedServer(MCPServerStreamableHttp):
    """The SDK's client, as the agents see it:

    - its tools are the ones last listed (`MCPLink.known`), also while the server is down: a
      model that calls one, perhaps because it did earlier in the conversation, hears that the
      tool could not be reached (a tool that is no longer offered would fail the whole turn);
    - none whose name is taken: by one of our own tools or handoffs, or by a server listed
      before it in MCP_SERVER_URL (two tools of one name fail every turn in the SDK);
    - a result over MCP_MAX_RESULT_CHARS is refused (ToolResultTooLarge).
    """

    link: MCPLink

    async def list_tools(self, run_context: Any = None, agent: Any = None) -> list[MCPTool]:
        if self.link.state == "up" and self.session is not None:
            try:
                self.link.remember(await super().list_tools(run_context, agent))
            except Exception as error:
                self.link.suspect(error)
        taken = self.link.taken_by_others()
        return [tool for tool in self.link.known if tool.name not in taken]

    async def list_tools_now(self) -> list[MCPTool]:
        """The server's tools, whatever the link's state (the link fetches them on connect)."""
        return await super().list_tools()

    async def call_tool(
        self, tool_name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        result = await super().call_tool(tool_name, arguments, meta)
        size = result_size(result)
        if size > self.link.max_result_chars:
            raise ToolResultTooLarge(tool_name, size, self.link.max_result_chars)
        return result


@dataclass
class LinkStatus:
    name: str
    state: LinkState
    tools: list[str]
    last_error: str | None


class MCPLink:
    """One MCP server, connected and watched by its own task."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        timeout: float,
        retry_max: float,
        max_result_chars: int = 100_000,
    ) -> None:
        self.name = server_label(url)
        self.timeout = timeout
        self.retry_max = retry_max
        self.max_result_chars = max_result_chars
        self.state: LinkState = "connecting"
        self.known: list[MCPTool] = []  # the tools it offers (the last list it gave)
        self.last_error: str | None = None
        self.reserved: frozenset[str] = frozenset()
        self.earlier: list[MCPLink] = []  # the links listed before this one
        self._connected_before = False
        self._left_out: set[str] = set()  # tools already logged as left out
        self._listed: list[MCPTool] | None = None  # the list `known` was made from
        self.server = LinkedServer(
            params={"url": url, "headers": headers, "timeout": timeout},
            name=self.name,
            cache_tools_list=True,
            client_session_timeout_seconds=timeout,
            # A structured result (a dict) reaches the model, and the client, as its JSON.
            use_structured_content=True,
        )
        self.server.link = self
        self._suspect = asyncio.Event()
        self._stop = asyncio.Event()
        self._tried = asyncio.Event()  # the first connect attempt has ended, either way
        self._task: asyncio.Task[None] | None = None

    @property
    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.known]

    def taken_by_others(self) -> set[str]:
        """Names this server's tools may not have: ours, and those of earlier servers."""
        return set(self.reserved).union(*(link.tool_names for link in self.earlier))

    def remember(self, tools: list[MCPTool]) -> None:
        """Keep the tools a model can be offered: a name the OpenAI APIs accept, an object
        schema, each name once, none of ours (each left out is logged once). Every model call
        lists the tools; the SDK answers from its cache with the same list, checked once."""
        if tools is self._listed:
            return
        self._listed = tools
        kept: dict[str, MCPTool] = {}
        for tool in tools:
            problem = _unusable(tool, self.reserved)
            if problem is None and tool.name not in kept:
                kept[tool.name] = tool
            elif problem is not None and tool.name not in self._left_out:
                self._left_out.add(tool.name)
                logger.warning(
                    "MCP server %s: tool %r left out: %s", self.name, tool.name[:80], problem
                )
        self.known = sorted(kept.values(), key=lambda tool: tool.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-link {self.name}")

    async def first_attempt(self) -> None:
        await self._tried.wait()

    def suspect(self, error: BaseException | None = None) -> None:
        """A call failed: check the server now rather than at the next check."""
        if error is not None:
            self.last_error = type(error).__name__
        self._suspect.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.timeout + 1)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> LinkStatus:
        return LinkStatus(self.name, self.state, self.tool_names, self.last_error)

    async def _run(self) -> None:
        delay = RETRY_BASE_SECONDS
        while not self._stop.is_set():
            if await self._connect():
                delay = RETRY_BASE_SECONDS
                await self._watch()
                self.state = "down"
                await self._close()
                if self._stop.is_set():
                    return
                logger.warning("MCP server %s stopped answering (%s)", self.name, self.last_error)
            # Backoff with jitter: workers that lost the same server do not return in step.
            await self._sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max)

    async def _connect(self) -> bool:
        try:
            await self.server.connect()
            self.server.invalidate_tools_cache()  # a reconnect fetches the list anew
            tools = await asyncio.wait_for(self.server.list_tools_now(), self.timeout)
        except Exception as error:
            self.state = "down"
            first_failure = self.last_error != type(error).__name__
            self.last_error = type(error).__name__
            if first_failure:  # one line per kind of failure, not one per retry
                logger.warning("MCP server %s unreachable (%s)", self.name, self.last_error)
            await self._close()
            return False
        finally:
            self._tried.set()
        self.remember(tools)
        self.state, self.last_error = "up", None
        logger.info(
            "MCP server %s %s: %d tools",
            self.name,
            "reconnected" if self._connected_before else "connected",
            len(self.known),
        )
        self._connected_before = True
        return True

    async def _watch(self) -> None:
        """Returns when the server stops answering, or the link is stopped."""
        while not self._stop.is_set():
            self._suspect.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake(), CHECK_SECONDS)
            if self._stop.is_set():
                return
            session = self.server.session
            try:
                if session is None:
                    raise ConnectionError("no session")
                # tools/list, not ping: every tool server answers it, and some (the mcp
                # package's own MCPServer) answer ping with "Method not found".
                await asyncio.wait_for(session.list_tools(), self.timeout)
            except Exception as error:
                self.last_error = type(error).__name__
                return

    async def _wake(self) -> None:
        """Until a call failed or the link is stopped."""
        stop = asyncio.ensure_future(self._stop.wait())
        suspect = asyncio.ensure_future(self._suspect.wait())
        try:
            await asyncio.wait({stop, suspect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            suspect.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self.server.cleanup(), self.timeout)
        except Exception as error:  # closing a dead connection may fail; the next connect is new
            logger.debug("closing MCP server %s: %s", self.name, type(error).__name__)


class MCPLinks:
    """Every configured MCP server's link; `servers` go into every agent's `mcp_servers`."""

    def __init__(self, links: list[MCPLink]) -> None:
        self.links = links
        for index, link in enumerate(links):
            link.earlier = links[:index]

    @classmethod
    def from_settings(cls, settings: Settings) -> MCPLinks:
        headers = settings.mcp_header_map
        return cls(
            [
                MCPLink(
                    url,
                    headers,
                    settings.mcp_timeout_seconds,
                    settings.mcp_retry_max_seconds,
                    settings.mcp_max_result_chars,
                )
                for url in settings.mcp_server_urls
            ]
        )

    @property
    def servers(self) -> list[LinkedServer]:
        return [link.server for link in self.links]

    def reserve(self, names: set[str]) -> None:
        """Tool names of our own (function tools, handoffs): an MCP tool by such a name is
        left out, so a server cannot take a town-hall tool's place."""
        for link in self.links:
            link.reserved = frozenset(names)

    async def start(self) -> None:
        """Connect every server, waiting a bounded time for each first attempt (so the first
        turns have their tools); the ones that fail keep retrying in the background."""
        for link in self.links:
            link.start()
        if self.links:
            wait = max(link.timeout for link in self.links) + START_WAIT_EXTRA_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(link.first_attempt() for link in self.links)), wait
                )

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self.links))

    def status(self) -> list[LinkStatus]:
        return [link.status() for link in self.links]

    def tool_failure(self, ctx: RunContextWrapper[Any], error: Exception) -> str:
        """What the model hears when an MCP tool fails; the server is checked at once."""
        tool = getattr(ctx, "tool_name", None) or "the tool"
        # The server that offers the tool: the first that knows it (see LinkedServer).
        link = next((lk for lk in self.links if tool in lk.tool_names), None)
        cause = error if isinstance(error, ToolResultTooLarge) else error.__cause__
        if isinstance(cause, ToolResultTooLarge):
            logger.warning("MCP tool %s answered too much (%d characters)", tool, cause.size)
            return (
                f"The tool {tool} answered with more than {cause.limit} characters, too much "
                "to use. Tell the resident that answer could not be used."
            )
        if link is not None:
            link.suspect(error)
        logger.warning(
            "MCP tool %s failed (%s) on %s",
            tool,
            type(error).__name__,
            link.name if link else "an MCP server",
        )
        timed_out = "timed out" in str(error).lower() or isinstance(error, TimeoutError)
        why = "did not answer in time" if timed_out else "could not be reached"
        return (
            f"The tool {tool} {why}, so it returned nothing. Tell the resident this service is "
            "unavailable right now and offer to help otherwise; do not retry it in this answer."
        )


# The name rule of OpenAI's function tools (Responses and Chat Completions); a request with
# another name is refused outright, failing every turn that offers it.
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _unusable(tool: MCPTool, reserved: frozenset[str]) -> str | None:
    """Why a model cannot be offered `tool`, if it cannot."""
    if tool.name in reserved:
        return "the name is one of the town hall's own tools"
    if not TOOL_NAME.match(tool.name):
        return "the name must be 1-64 characters of a-z A-Z 0-9 _ -"
    schema = tool.input_schema
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return "its input schema is not an object"
    if not isinstance(schema.get("properties", {}), dict):
        return "its input schema's properties are not an object"
    return None
