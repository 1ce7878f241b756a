"""The agents page: live status, creating an agent (its token shown once), renaming, restarting
and deleting; and the console laid out for a desktop and a phone."""

from __future__ import annotations

import asyncio
import contextlib

from playwright.async_api import Page, expect

from tests.agents.support import HubServer, agent_socket
from tests.console.support import admin, demo_id, open_agent, recorded, sign_in, start_recording

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => !el.closest('[hidden]'))
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
        && !(el.tagName === 'BUTTON' && el.textContent.trim()))
    .map((el) => el.outerHTML)"""

OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


async def test_the_demo_agent_shows_online_and_its_status_changes_live(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    agent = await demo_id(hub)
    row = page.locator(f"tr[data-agent-id='{agent}']")
    await expect(row.get_by_role("link", name="demo")).to_be_visible()
    await expect(row.locator(".status-online")).to_have_text("online")
    await expect(row.locator(".health-healthy")).to_have_text("healthy")

    await start_recording(page, ".agent-list", f"tr[data-agent-id='{agent}'] td .badge")
    await row.get_by_role("button", name="Restart demo").click()
    # A new agent process starts: allow for a busy machine (the hub itself waits up to 30 s).
    restarted = page.locator(".notice").filter(has_text="demo restarted in")
    await expect(restarted).to_be_visible(timeout=30_000)
    await expect(row.locator(".status-online")).to_have_text("online")
    states = await recorded(page)
    assert "restarting" in states, states
    assert states[-1] == "online", states


async def test_create_an_agent_then_rename_and_delete_it(page: Page, hub: HubServer) -> None:
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await sign_in(page, hub)
    await page.get_by_role("button", name="New agent").click()
    await page.get_by_label("Name", exact=True).fill("scratch")
    await page.get_by_label("Description (optional)").fill("made by the console test")
    await page.get_by_role("button", name="Create agent").click()

    panel = page.get_by_role("region", name="Agent scratch created")
    token = await panel.locator("code.token").inner_text()
    assert token.startswith("kai_agent_")
    run = await panel.locator("code.command").inner_text()
    ws = hub.base_url.replace("http://", "ws://")
    assert run == f"KAI_AGENT_TOKEN={token} kai agent run your_module:agent --url {ws}/ws/agent"
    await panel.get_by_role("button", name="Copy token").click()
    await expect(panel.get_by_role("button", name="Copied", exact=True)).to_be_visible()
    assert await page.evaluate("() => navigator.clipboard.readText()") == token
    await panel.get_by_role("button", name="I have copied the token").click()
    await expect(panel).to_be_hidden()
    assert token not in await page.content()  # shown once, and only once

    # The token lets an agent connect, and the list sees it come and go, live.
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="scratch"))
    await expect(row.locator(".status-offline")).to_be_visible()
    async with agent_socket(hub.ws_url, token) as raw:
        await raw.hello("scratch")

        async def beat() -> None:
            while True:
                await raw.heartbeat()
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(beat())
        try:
            await expect(row.locator(".status-online")).to_be_visible()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
    await expect(row.locator(".status-offline")).to_be_visible()

    await row.get_by_role("button", name="Rename scratch").click()
    dialog = page.get_by_role("dialog", name="Rename scratch")
    await dialog.get_by_label("New name").fill("renamed")
    await dialog.get_by_role("button", name="Rename").click()
    renamed = page.get_by_role("row").filter(has=page.get_by_role("link", name="renamed"))
    await expect(renamed).to_be_visible()
    agent_id = await renamed.get_attribute("data-agent-id")

    await renamed.get_by_role("button", name="Delete renamed").click()
    dialog = page.get_by_role("dialog", name="Delete renamed?")
    await expect(dialog.get_by_label("Write a backup archive first")).to_be_checked()
    await expect(dialog).to_contain_text("kai agents restore")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(renamed).to_be_visible()  # cancelling deletes nothing

    await renamed.get_by_role("button", name="Delete renamed").click()
    await dialog.get_by_role("button", name="Delete agent").click()
    await expect(page.locator(".notice").filter(has_text="Deleted renamed; backup")).to_be_visible()
    await expect(renamed).to_be_hidden()
    response = await (await admin(hub)).call("GET", f"/api/agents/{agent_id}")
    assert response.status_code == 404


async def test_the_console_fits_a_desktop_and_a_phone_with_every_control_labelled(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    for width, height in ((1280, 900), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(hub.base_url + "/#/agents")
        await expect(page.get_by_role("link", name="demo", exact=True)).to_be_visible()
        assert await page.evaluate(OVERFLOW) <= 0, f"the agents page scrolls sideways at {width}"
        await open_agent(page)
        for region in ("Status", "Prompt", "Tasks", "Command", "Files", "Logs"):
            await expect(page.get_by_role("region", name=region)).to_be_visible()
        assert await page.evaluate(OVERFLOW) <= 0, f"the agent page scrolls sideways at {width}"
        assert await page.evaluate(UNLABELLED) == []
        # Everything can be reached from the keyboard: the prompt box is a few Tabs away.
        await page.get_by_role("heading", level=1).focus()
        prompt = page.get_by_role("textbox", name="Your prompt")
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await prompt.evaluate("el => el === document.activeElement"):
                break
        await expect(prompt).to_be_focused()
