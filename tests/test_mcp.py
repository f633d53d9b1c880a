"""Tools from a real MCP server (tests/support/mcp_server.py, its own process on 127.0.0.1,
streamable HTTP): listed and called through /chat and ChatKit, a widget shown as a widget, the
server stopped mid-run, started late, a tool that hangs, and auth headers. The model is a
ScriptedModel; the MCP client is the Agents SDK's own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ModelCall, ScriptedModel, assistant_message, function_call

from api import create_app
from tests.support.app import asgi_client, free_port, make_settings
from tests.support.chatkit_client import ChatKitClient, of_type
from tests.support.desks import to_incident_desk
from tests.support.frames import Frame, named, parse_sse
from townhall.settings import Settings, SettingsError

MCP_SERVER_SCRIPT = Path(__file__).parent / "support" / "mcp_server.py"
# report_incident is ours, ward.lookup a name the OpenAI APIs refuse: both left out.
MCP_TOOLS = ["big_answer", "slow_lookup", "ward_card", "ward_of"]
TOKEN = "mcp-test-token-7f3a"


class MCPProcess:
    """The test MCP server as a process that can be stopped and started again on its port."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        token = ["--token", self.token] if self.token else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, str(MCP_SERVER_SCRIPT), "--port", str(self.port), *token
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the MCP test server did not start")

    async def stop(self) -> None:
        """kill -9: the connection is gone without a goodbye."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def mcp_server() -> AsyncIterator[MCPProcess]:
    server = MCPProcess(free_port())
    try:
        yield server
    finally:
        await server.stop()


def settings_for(server: MCPProcess, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mcp_server_url": server.url,
        "mcp_timeout_seconds": 2.0,
        "mcp_retry_max_seconds": 0.5,
    }
    return make_settings(**(values | overrides))


@contextlib.asynccontextmanager
async def town_hall(settings: Settings, model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, model=model)) as client:
        yield client


async def chat(client: httpx.AsyncClient, message: str, session_id: str) -> list[Frame]:
    response = await client.post("/chat", json={"message": message, "session_id": session_id})
    assert response.status_code == 200, response.text
    return [Frame(event, data) for event, data in parse_sse(response.content)]


def offered(call: ModelCall) -> list[str]:
    return sorted(tool.name for tool in call.tools)


async def mcp_state(client: httpx.AsyncClient) -> tuple[str, str]:
    health = (await client.get("/health")).json()
    return health["status"], health["checks"]["mcp"]["detail"]["servers"][0]["state"]


async def wait_state(client: httpx.AsyncClient, state: str, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while (await mcp_state(client))[1] != state:
        assert time.monotonic() < deadline, f"the MCP link never became {state}"
        await asyncio.sleep(0.1)


async def test_mcp_tools_are_offered_to_every_agent_and_called_through_chat(
    mcp_server: MCPProcess,
) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("ward_of", {"street": "Main Street"}, call_id="mcp-1")],
            [assistant_message("Main Street is in ward 7.")],
            to_incident_desk(),
            [function_call("report_incident", POTHOLE, call_id="ours-1")],
            [assistant_message("Filed.")],
        ]
    )
    async with town_hall(settings_for(mcp_server), model) as client:
        assert await mcp_state(client) == ("healthy", "up")
        frames = await chat(client, "Which ward is Main Street in?", "mcp-chat")
        filed = await chat(client, "Pothole at Main Street 3, file it", "mcp-chat")
        health = (await client.get("/health")).json()
    assert [f.event for f in frames][:3] == ["session", "tool_call", "tool_result"]
    assert named(frames, "tool_call") == [
        {"name": "ward_of", "arguments": {"street": "Main Street"}, "call_id": "mcp-1"}
    ]
    assert named(frames, "tool_result") == [
        {
            "call_id": "mcp-1",
            "output": {"street": "Main Street", "ward": 7, "councillor": "A. Tanaka"},
        }
    ]
    # Every agent has the MCP tools next to its own; the server's report_incident never
    # replaced ours (the report below is a real town-hall record).
    assert [offered(call) for call in model.calls] == [
        sorted(["check_report_status", *MCP_TOOLS]),
        sorted(["check_report_status", *MCP_TOOLS]),
        sorted(["check_report_status", *MCP_TOOLS]),
        sorted(["report_incident", "check_report_status", *MCP_TOOLS]),
        sorted(["report_incident", "check_report_status", *MCP_TOOLS]),
    ]
    assert named(filed, "tool_result")[0]["output"]["reference"].startswith("INC-")
    assert health["checks"]["mcp"]["detail"]["servers"] == [
        {
            "name": f"127.0.0.1:{mcp_server.port}/mcp",
            "state": "up",
            "tools": MCP_TOOLS,
            "last_error": None,
        }
    ]
    model.assert_complete()


async def test_a_widget_from_an_mcp_tool_is_shown_as_a_widget_in_chatkit(
    mcp_server: MCPProcess,
) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("ward_card", {"ward": 7}, call_id="card-1")],
            [assistant_message("Here is your ward.")],
        ]
    )
    async with town_hall(settings_for(mcp_server), model) as http:
        events = await ChatKitClient(http).create_thread("Tell me about ward 7")
    widgets = [
        e.item.widget for e in of_type(events, "thread.item.done") if e.item.type == "widget"
    ]
    assert [p.text for p in of_type(events, "progress_update")] == ["Using ward_card…"]
    assert len(widgets) == 1
    card = widgets[0].model_dump(exclude_none=True)
    assert card["type"] == "Card"
    assert [child["value"] for child in card["children"]][0] == "Ward 7"


async def test_a_server_stopped_mid_run_fails_one_call_not_the_turn_and_comes_back(
    mcp_server: MCPProcess,
) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("ward_of", {"street": "Main Street"}, call_id="before")],
            [assistant_message("Ward 7.")],
        ]
    )
    async with town_hall(settings_for(mcp_server), model) as client:
        await chat(client, "ward of Main Street?", "mcp-stop")
        await mcp_server.stop()
        model.extend(
            [
                [function_call("ward_of", {"street": "Side Street"}, call_id="during")],
                [assistant_message("That service is down, sorry.")],
            ]
        )
        during = await chat(client, "and Side Street?", "mcp-stop")
        await wait_state(client, "down")
        degraded = (await client.get("/health")).json()
        # Down, its tools are still offered (the model used them earlier in this conversation;
        # a tool no longer offered would fail the whole turn): a call answers at once.
        model.extend(
            [
                [function_call("ward_of", {"street": "Side Street"}, call_id="while-down")],
                [assistant_message("Still down, sorry.")],
            ]
        )
        while_down = await chat(client, "try again?", "mcp-stop")
        await mcp_server.start()
        await wait_state(client, "up")
        model.extend(
            [
                [function_call("ward_of", {"street": "Side Street"}, call_id="back")],
                [assistant_message("Ward 7.")],
            ]
        )
        back = await chat(client, "and now?", "mcp-stop")
    failure = named(during, "tool_result")[0]["output"]
    assert failure.startswith("The tool ward_of could not be reached")
    assert [f.event for f in during][-2:] == ["done", "message"]  # the turn finished
    assert "Traceback" not in failure and TOKEN not in failure
    assert degraded["status"] == "degraded"
    assert degraded["checks"]["mcp"]["required"] is False
    assert named(while_down, "tool_result")[0]["output"].startswith(
        "The tool ward_of could not be reached"
    )
    assert named(while_down, "done")
    assert offered(model.calls[-3]) == sorted(["check_report_status", *MCP_TOOLS])
    assert named(back, "tool_result")[0]["output"]["ward"] == 7


async def test_a_server_killed_during_a_call_ends_that_call_not_the_turn(
    mcp_server: MCPProcess,
) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("slow_lookup", {"seconds": 30}, call_id="cut")],
            [assistant_message("The lookup broke off, sorry.")],
        ]
    )
    async with town_hall(settings_for(mcp_server, mcp_timeout_seconds=20.0), model) as client:
        turn = asyncio.create_task(chat(client, "look it up slowly", "mcp-cut"))
        await asyncio.sleep(1.0)  # the call is running on the server
        killed = time.monotonic()
        await mcp_server.stop()
        frames = await asyncio.wait_for(turn, 15)
        after_kill = time.monotonic() - killed
    assert named(frames, "tool_result")[0]["output"].startswith(
        "The tool slow_lookup could not be reached"
    )
    assert named(frames, "done")
    assert after_kill < 10  # not the 20 s call timeout: the broken connection ends the call


async def test_a_healthy_server_stays_up_through_its_checks(
    mcp_server: MCPProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic check must pass against a real server (MCP ping would not: the mcp
    package's own server answers it with "Method not found")."""
    monkeypatch.setattr("townhall.mcp_links.CHECK_SECONDS", 0.1)
    await mcp_server.start()
    async with town_hall(settings_for(mcp_server), ScriptedModel([])) as client:
        states = []
        for _ in range(10):  # ten checks and more
            await asyncio.sleep(0.15)
            states.append((await mcp_state(client))[1])
    assert set(states) == {"up"}


async def test_a_server_started_late_is_connected_in_the_background(
    mcp_server: MCPProcess,
) -> None:
    model = ScriptedModel([[assistant_message("No ward tools yet.")]])
    started = time.monotonic()
    async with town_hall(settings_for(mcp_server), model) as client:
        startup = time.monotonic() - started
        status, state = await mcp_state(client)
        frames = await chat(client, "hello", "mcp-late")
        await mcp_server.start()
        await wait_state(client, "up")
        model.extend([[assistant_message("Now with them.")]])
        await chat(client, "hello again", "mcp-late")
    assert (status, state) == ("degraded", "down")
    assert startup < 10  # start-up waited a bounded time, then went on
    assert named(frames, "done")
    assert offered(model.calls[0]) == ["check_report_status"]
    assert offered(model.calls[1]) == sorted(["check_report_status", *MCP_TOOLS])


async def test_a_tool_that_hangs_times_out_into_a_message(mcp_server: MCPProcess) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("slow_lookup", {"seconds": 60}, call_id="hang")],
            [assistant_message("It did not answer.")],
        ]
    )
    async with town_hall(settings_for(mcp_server, mcp_timeout_seconds=1.0), model) as client:
        began = time.monotonic()
        frames = await chat(client, "look it up", "mcp-hang")
        took = time.monotonic() - began
        # The client gives the timed-out session up; the link notices and connects anew.
        await wait_state(client, "up")
        model.extend(
            [
                [function_call("ward_of", {"street": "Main Street"}, call_id="after")],
                [assistant_message("Ward 7.")],
            ]
        )
        after = await chat(client, "ward of Main Street?", "mcp-hang")
    assert named(frames, "tool_result")[0]["output"].startswith(
        "The tool slow_lookup did not answer in time"
    )
    assert named(frames, "done") and took < 10
    assert named(after, "tool_result")[0]["output"]["ward"] == 7


async def test_headers_from_mcp_headers_authenticate_and_never_show(
    mcp_server: MCPProcess, caplog: pytest.LogCaptureFixture
) -> None:
    mcp_server.token = TOKEN
    await mcp_server.start()
    with_token = settings_for(mcp_server, mcp_headers=f'{{"Authorization": "Bearer {TOKEN}"}}')
    async with town_hall(with_token, ScriptedModel([])) as client:
        authorised = await mcp_state(client)
        health_text = (await client.get("/health")).text
    async with town_hall(settings_for(mcp_server), ScriptedModel([])) as client:
        refused = await mcp_state(client)
    assert authorised == ("healthy", "up")
    assert refused == ("degraded", "down")
    assert TOKEN not in health_text and TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MCP_SERVER_URL", "ftp://127.0.0.1/mcp"),
        ("MCP_SERVER_URL", "http://127.0.0.1:9/mcp, file:///etc/passwd"),
        ("MCP_HEADERS", "Authorization: Bearer s3cret-value"),
        ("MCP_HEADERS", '{"Authorization": 12345678}'),
    ],
)
def test_bad_mcp_settings_name_the_variable_not_the_value(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({variable: value}, env_file=None)
    assert variable in str(refused.value)
    assert "s3cret" not in str(refused.value) and "12345678" not in str(refused.value)


async def test_several_servers_one_down_leaves_the_others_working(mcp_server: MCPProcess) -> None:
    await mcp_server.start()
    down = f"http://127.0.0.1:{free_port()}/mcp"
    model = ScriptedModel([[assistant_message("ok")]])
    settings = settings_for(mcp_server, mcp_server_url=f"{mcp_server.url},{down}")
    async with town_hall(settings, model) as client:
        health = (await client.get("/health")).json()
        await chat(client, "hi", "mcp-many")
    states = [s["state"] for s in health["checks"]["mcp"]["detail"]["servers"]]
    assert states == ["up", "down"] and health["status"] == "degraded"
    assert offered(model.calls[0]) == sorted(["check_report_status", *MCP_TOOLS])


async def test_two_servers_with_the_same_tools_offer_each_name_once(mcp_server: MCPProcess) -> None:
    """The SDK fails every turn that offers two tools of one name: the server listed first
    keeps the name (also while it is down: a call then answers that it cannot be reached)."""
    second = MCPProcess(free_port())
    await mcp_server.start()
    await second.start()
    try:
        model = ScriptedModel(
            [
                [function_call("ward_of", {"street": "Main Street"}, call_id="twice")],
                [assistant_message("Ward 7.")],
            ]
        )
        settings = settings_for(mcp_server, mcp_server_url=f"{mcp_server.url},{second.url}")
        async with town_hall(settings, model) as client:
            frames = await chat(client, "ward?", "mcp-twice")
            await mcp_server.stop()
            model.extend(
                [
                    [function_call("ward_of", {"street": "Side Street"}, call_id="gone")],
                    [assistant_message("That one is down.")],
                ]
            )
            await chat(client, "and Side Street?", "mcp-twice")  # the failed call: checked now
            await wait_state(client, "down", limit=5)
            model.extend([[assistant_message("Still here.")]])
            await chat(client, "and now?", "mcp-twice")
            servers = (await client.get("/health")).json()["checks"]["mcp"]["detail"]["servers"]
    finally:
        await second.stop()
    assert named(frames, "tool_result")[0]["output"]["ward"] == 7
    assert offered(model.calls[0]) == sorted(["check_report_status", *MCP_TOOLS])
    # The first server keeps its names while down (its last list): no second copy offered.
    assert offered(model.calls[-1]) == sorted(["check_report_status", *MCP_TOOLS])
    assert [s["state"] for s in servers] == ["down", "up"]


async def test_a_result_over_the_limit_is_refused_into_a_message(mcp_server: MCPProcess) -> None:
    await mcp_server.start()
    model = ScriptedModel(
        [
            [function_call("big_answer", {"chars": 5000}, call_id="big")],
            [assistant_message("Too much.")],
        ]
    )
    settings = settings_for(mcp_server, mcp_max_result_chars=1000)
    async with town_hall(settings, model) as client:
        frames = await chat(client, "a big answer please", "mcp-big")
        state = await mcp_state(client)
    output = named(frames, "tool_result")[0]["output"]
    assert output.startswith("The tool big_answer answered with more than 1000 characters")
    assert "x" * 100 not in json.dumps([f.data for f in frames])
    assert "x" * 100 not in json.dumps(model.calls[-1].input)  # nor kept for the model
    assert state == ("healthy", "up")  # the server is fine: not suspected


POTHOLE = {
    "category": "pothole",
    "description": "A deep pothole",
    "location": "Main Street 3",
    "severity": 3,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}
