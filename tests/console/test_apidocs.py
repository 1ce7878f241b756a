"""``/docs`` in a real browser: Swagger UI renders the hub's schema from the hub's own files,
with every other origin cut off (offline), within its Content-Security-Policy."""

from __future__ import annotations

from playwright.async_api import Page, Route, expect

from tests.agents.support import HubServer
from tests.console.support import PageLog


async def test_the_api_docs_render_offline(page: Page, hub: HubServer, page_log: PageLog) -> None:
    async def same_origin_only(route: Route) -> None:
        if route.request.url.startswith(hub.base_url):
            await route.continue_()
        else:
            await route.abort("internetdisconnected")

    await page.route("**/*", same_origin_only)
    await page.goto(f"{hub.base_url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("kai")
    login = page.locator(".opblock-summary-path", has_text="/api/auth/login")
    await expect(login).to_be_visible()
    await login.click()  # an operation unfolds, its schema drawn: still within the CSP
    await expect(page.get_by_role("button", name="Try it out")).to_be_visible()
    await expect(page.locator(".opblock-body .model-example").first).to_be_visible()
    assert page_log.urls
    assert all(url.startswith(hub.base_url) for url in page_log.urls), page_log.urls
