"""/docs renders with no network: Swagger UI's script and styles come from this server (the
pinned fastapi-offline package), not from a CDN. Chromium is given no way out: every request
to another host is refused, and counted."""

from __future__ import annotations

from typing import Any

import httpx

from api import create_app
from tests.support.app import live_server, make_settings
from tests.support.browser import CHROMIUM_FLAGS, chromium_path

# No name resolves but 127.0.0.1's own: the page cannot reach the internet even if it tried.
OFFLINE = [*CHROMIUM_FLAGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


async def test_docs_render_the_operations_with_no_network() -> None:
    browser_path = chromium_path()
    from playwright.async_api import Route, async_playwright

    app = create_app(make_settings(api_keys="docs-key-1"))  # the pages need no key
    async with live_server(app) as base_url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=browser_path, args=OFFLINE)
        elsewhere: list[str] = []

        async def only_this_server(route: Route, request: Any) -> None:
            if request.url.startswith(base_url):
                await route.continue_()
            else:
                elsewhere.append(request.url)
                await route.abort()

        try:
            page = await browser.new_page()
            await page.route("**/*", only_this_server)
            await page.goto(f"{base_url}/docs")
            chat = page.locator(".opblock-summary-path", has_text="/chat").first
            await chat.wait_for(timeout=20_000)
            paths = await page.locator(".opblock-summary-path").all_text_contents()

        finally:
            await browser.close()
        async with httpx.AsyncClient(base_url=base_url) as client:
            asset = await client.get("/docs-assets/swagger-ui-bundle.js")
            redoc = await client.get("/redoc")  # ReDoc's bundle would still reach for a CDN
    assert "/chat" in paths and "/health" in paths
    assert elsewhere == []
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert redoc.status_code in (401, 404)
