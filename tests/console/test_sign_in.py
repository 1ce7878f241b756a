"""Signing in to the console: password, magic link, a session kept across reloads, refreshed
before it expires and ended cleanly; and the headers every console answer carries."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.async_api import Page, Response, expect

from tests.agents.processes import REPO_ROOT
from tests.agents.support import HubServer, eventually
from tests.conftest import Mailbox
from tests.console.support import PageLog, session_tokens, sign_in
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer

ACCESS_TTL = 6  # seconds: short enough to see the console refresh its token during a test
STATIC = REPO_ROOT / "kai" / "console" / "static"
# Ways a page turns a string into markup or code; the console uses none of them.
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|setHTMLUnsafe|document\.write|srcdoc"
    r"|\beval\(|new Function|setAttribute\(\s*['\"](style|on\w+)"
)


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, Any]:
    return {"access_token_ttl": ACCESS_TTL}


async def test_every_console_answer_carries_a_strict_csp(hub: HubServer) -> None:
    for path in (
        "/",
        "/login/magic",
        "/console/app.js",
        "/console/views/agent.js",
        "/console/console.css",
    ):
        response = await hub.client.get(path)
        assert response.status_code == 200, path
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    script = await hub.client.get("/console/app.js")
    assert "javascript" in script.headers["content-type"]
    # Probes and `curl -I` ask with HEAD: the same headers, no body.
    for path in ("/", "/login/magic", "/console/app.js"):
        head = await hub.client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert "default-src 'none'" in head.headers["content-security-policy"]


def test_the_console_has_no_inline_code_and_never_parses_markup() -> None:
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="/console/app.js">']
    assert not re.search(r"<style|\sstyle=|\son\w+=|javascript:", page)
    sources = sorted(STATIC.rglob("*.js"))
    assert len(sources) > 10
    for source in sources:
        found = MARKUP_SINKS.findall(source.read_text())
        assert not found, f"{source.relative_to(REPO_ROOT)} uses {found}"


async def test_sign_in_with_a_password_from_the_keyboard(page: Page, hub: HubServer) -> None:
    await page.goto(hub.base_url + "/")
    email = page.get_by_label("Email", exact=True)
    await expect(email).to_be_focused()  # the form is ready to type into

    await page.keyboard.type(ADMIN_EMAIL)
    await page.keyboard.press("Tab")
    await page.keyboard.type("not the password")
    await page.keyboard.press("Enter")
    alert = page.get_by_role("alert").filter(has_text="Authentication failed")
    await expect(alert).to_contain_text("401")
    await expect(page.get_by_label("Password", exact=True)).to_be_focused()

    await page.keyboard.press("Control+A")
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()
    header = page.get_by_role("banner")
    await expect(header).to_contain_text(ADMIN_EMAIL)
    await expect(header).to_contain_text("admin")
    nav = page.get_by_role("navigation", name="Main")
    for link in ("Agents", "Users", "Audit", "Services", "Config"):
        await expect(nav.get_by_role("link", name=link)).to_be_visible()


async def test_a_reload_keeps_the_session_and_signing_out_ends_it(
    page: Page, hub: HubServer, page_log: PageLog
) -> None:
    await sign_in(page, hub)
    await expect(page.get_by_role("link", name="demo", exact=True)).to_be_visible()
    kept = await session_tokens(page)
    assert kept is not None

    await page.reload()
    await expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()
    await expect(page.get_by_role("banner")).to_contain_text(ADMIN_EMAIL)
    await expect(page.get_by_role("link", name="demo", exact=True)).to_be_visible()
    after = await session_tokens(page)
    assert after is not None

    # Tokens travel in headers and bodies only, never in an address.
    secrets = {kept["accessToken"], kept["refreshToken"], after["accessToken"]}
    leaked = [url for url in page_log.urls if any(secret in url for secret in secrets)]
    assert not leaked, leaked

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to kai")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="signed out")).to_be_visible()
    assert await session_tokens(page) is None
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to kai")).to_be_visible()
    # The hub ended the session too: its refresh token is worth nothing now.
    response = await hub.client.post(
        "/api/auth/refresh", json={"refreshToken": after["refreshToken"]}
    )
    assert response.status_code == 401, response.text


async def test_a_magic_link_signs_in_and_leaves_no_token_behind(
    page: Page, hub: HubServer, mailbox: Mailbox
) -> None:
    await page.goto(hub.base_url + "/")
    await page.get_by_label("Email for the link").fill(ADMIN_EMAIL)
    await page.get_by_role("button", name="Email me a link").click()
    await expect(page.get_by_role("status").filter(has_text="on its way")).to_be_visible()

    (mail,) = await mailbox.wait_for(ADMIN_EMAIL)
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    (link,) = re.findall(r"http://\S+/login/magic#token=[A-Za-z0-9_-]+", payload.decode())
    assert link.startswith(hub.base_url)
    token = link.split("#token=")[1]

    await page.goto(link)
    await expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()
    assert token not in page.url
    assert page.url == hub.base_url + "/#/agents"
    await page.go_back()  # the link was replaced in the history, not added to it
    assert token not in page.url

    # A link works once: landing on it again explains, and signs nobody in.
    await page.evaluate("() => localStorage.clear()")
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Sign in to kai")).to_be_visible()
    await expect(
        page.get_by_role("status").filter(has_text="Invalid or expired magic link")
    ).to_be_visible()
    assert token not in page.url


async def test_the_access_token_is_refreshed_before_it_expires(page: Page, hub: HubServer) -> None:
    refused: list[str] = []

    def on_response(response: Response) -> None:
        if response.status == 401:
            refused.append(response.url)

    page.on("response", on_response)
    await sign_in(page, hub)
    first = await session_tokens(page)
    assert first is not None
    signed_in = time.monotonic()

    async with page.expect_response(
        lambda r: r.url.endswith("/api/auth/refresh"), timeout=ACCESS_TTL * 1000
    ) as refreshed:
        pass
    assert (await refreshed.value).status == 200
    assert time.monotonic() - signed_in < ACCESS_TTL  # before the first token ran out
    second = await session_tokens(page)
    assert second is not None
    assert second["accessToken"] != first["accessToken"]
    assert second["refreshToken"] != first["refreshToken"]

    # Once the hub refuses the first token, the console goes on working with the new one.
    async def first_expired() -> bool:
        answer = await hub.client.get("/api/auth/session", headers=bearer(first["accessToken"]))
        return answer.status_code == 401

    await eventually(first_expired, ACCESS_TTL + 2, what="the first access token expiring")
    await page.get_by_role("link", name="Users").click()
    await expect(page.get_by_role("cell", name="Administrator")).to_be_visible()
    assert not refused, refused
