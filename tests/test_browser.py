"""The /demo page in a real browser (Playwright driving Debian's Chromium), served from a second
origin so that it reaches the API through CORS.

Needs Chromium: TEST_BROWSER names the executable (`.ci/run` installs Debian's chromium and sets
it); without it, and without /usr/bin/chromium, the test is skipped with that reason.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from agents.testing import ModelCall, ModelStep, ScriptedModel, assistant_message, function_call
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

from api import create_app
from tests.support.app import free_port, live_server, make_settings
from tests.support.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.desks import to_incident_desk
from tests.support.model_streams import Gate
from townhall.http.routes.info import DEMO_PAGE

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def front_end() -> Starlette:
    """A second origin that serves the same page, as a front end on :3000 would."""

    async def page(_: Any) -> FileResponse:
        return FileResponse(DEMO_PAGE, media_type="text/html")

    return Starlette(routes=[Route("/", page)])


def port_3000_or_free() -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 3000))
        except OSError:
            return free_port()
    return 3000


POTHOLE = {
    "category": "pothole",
    "description": "Deep pothole",
    "location": "Main Street",
    "severity": 3,
    "occurred_at": None,
    "people_involved": None,
    "reporter_name": None,
    "reporter_contact": None,
}


def remembers(call: ModelCall) -> list[Any]:
    said = [
        item["content"]
        for item in call.input
        if isinstance(item, dict) and item.get("role") == "user"
    ]
    return [assistant_message(f"Earlier you said: {said[0]}")]


async def test_demo_page_streams_through_cors_and_remembers_the_session() -> None:
    browser_path = chromium_path()
    from playwright.async_api import async_playwright

    gate = Gate("First words, then the rest of the answer.")
    model = ScriptedModel(
        [
            ModelStep.stream(gate),
            ModelStep.respond(remembers),
            to_incident_desk(),
            [function_call("report_incident", POTHOLE, call_id="c1")],
            [assistant_message("Filed, thank you.")],
        ]
    )
    front_port = port_3000_or_free()
    allowed = f"http://127.0.0.1:{front_port}"
    app = create_app(make_settings(cors_origins=allowed), model=model)
    registry = app.state.services.registry
    ARTIFACTS.mkdir(exist_ok=True)

    async with (
        live_server(app) as api_url,
        live_server(front_end(), port=front_port),  # type: ignore[arg-type]
        live_server(front_end()) as other_origin,  # type: ignore[arg-type]
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=browser_path, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{allowed}/?api={api_url}")
            await page.fill("#message", "Pothole on Main Street")
            await page.press("#message", "Enter")

            answer = page.locator(".assistant").first
            await answer.filter(has_text="First").wait_for(timeout=10_000)
            # The first word is on screen while the server is still streaming the turn.
            assert await page.text_content("#status") == "streaming"
            assert [c.busy for c in registry.list()] == [True]
            await page.screenshot(path=str(ARTIFACTS / "demo-first-token.png"))
            gate.opened.set()
            await page.locator("#status", has_text="done").wait_for(timeout=10_000)
            assert await answer.text_content() == "First words, then the rest of the answer."
            session_id = await page.text_content("#session")

            await page.fill("#message", "Do you remember what I said?")
            await page.press("#message", "Enter")
            second = page.locator(".assistant").nth(1)
            await second.filter(has_text="Earlier you said").wait_for(timeout=10_000)
            assert await second.text_content() == "Earlier you said: Pothole on Main Street"
            assert await page.text_content("#session") == session_id
            assert [c.session_id for c in registry.list()] == [session_id]

            await page.fill("#message", "Please file it: deep pothole, severity 3")
            await page.press("#message", "Enter")
            reference = page.locator(".tool .reference")
            await reference.wait_for(timeout=10_000)
            assert (await reference.text_content() or "").strip().startswith("INC-")
            assert "report_incident" in (await page.locator(".tool").first.text_content() or "")
            # The handoff shows which desk answers; the card says what was filed.
            assert await page.text_content("#desk") == "Incident desk"
            card = page.locator(".card")
            assert "Incident reported" in (await card.text_content() or "")
            await page.screenshot(path=str(ARTIFACTS / "demo-page.png"), full_page=True)

            refused = await browser.new_page()
            await refused.goto(f"{other_origin}/?api={api_url}")
            await refused.fill("#message", "hello from a site that is not allowed")
            await refused.press("#message", "Enter")
            error = refused.locator(".error")
            await error.wait_for(timeout=10_000)
            assert "Could not reach the town hall" in (await error.text_content() or "")
            await refused.screenshot(path=str(ARTIFACTS / "demo-cors-refused.png"))
        finally:
            await browser.close()
    model.assert_complete()


MARKDOWN_REPLY = (
    "**Bold** and *leaning* and `code`\n"
    "- first point\n"
    "- second point\n\n"
    '<img src=x onerror="window.pwned=1"> <b>raw</b> '
    "[bad](javascript:window.pwned=2) [good](https://example.org/help)"
)


async def test_demo_page_renders_safe_markdown_and_lists_past_conversations() -> None:
    browser_path = chromium_path()
    from playwright.async_api import async_playwright

    model = ScriptedModel(
        [[assistant_message(MARKDOWN_REPLY)], [assistant_message("A second conversation.")]]
    )
    app = create_app(make_settings(), model=model)
    ARTIFACTS.mkdir(exist_ok=True)
    async with (
        live_server(app) as api_url,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=browser_path, args=CHROMIUM_FLAGS
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{api_url}/demo")
            await page.fill("#message", "Show me some formatting")
            await page.press("#message", "Enter")
            await page.locator("#status", has_text="done").wait_for(timeout=10_000)
            answer = page.locator(".assistant").first
            assert await answer.locator("strong").text_content() == "Bold"
            assert await answer.locator("em").text_content() == "leaning"
            assert await answer.locator("code").text_content() == "code"
            assert await answer.locator("li").all_text_contents() == ["first point", "second point"]
            # Raw HTML from the model is text, never elements; only http(s) links are links.
            assert await answer.locator("img, b").count() == 0
            assert '<img src=x onerror="window.pwned=1">' in (await answer.text_content() or "")
            assert await page.evaluate("window.pwned") is None
            links = answer.locator("a")
            assert await links.count() == 1
            assert await links.get_attribute("href") == "https://example.org/help"
            first_session = await page.text_content("#session")
            await page.locator("#sessions button").first.wait_for(timeout=10_000)

            await page.click("#new")
            await page.fill("#message", "A new subject")
            await page.press("#message", "Enter")
            await page.locator("#status", has_text="done").wait_for(timeout=10_000)
            second_session = await page.text_content("#session")
            listed = page.locator("#sessions button")
            await listed.nth(1).wait_for(timeout=10_000)
            assert sorted(await listed.evaluate_all("bs => bs.map(b => b.dataset.session)")) == (
                sorted([first_session, second_session])
            )
            # Choosing the first conversation shows what was said there, and continues it.
            await page.click(f'#sessions button[data-session="{first_session}"]')
            await page.locator(".user", has_text="Show me some formatting").wait_for(timeout=10_000)
            assert await page.text_content("#session") == first_session
            assert await page.locator(".assistant strong").text_content() == "Bold"
            await page.screenshot(path=str(ARTIFACTS / "demo-markdown.png"), full_page=True)
        finally:
            await browser.close()
    model.assert_complete()
