"""The teams pages: create a team of your agents from the console, then watch its channel live
while a member agent publishes on it; what agents publish always shows as text."""

from __future__ import annotations

import asyncio
import contextlib

from playwright.async_api import Page, expect

from kai.sdk import Agent
from tests.agents.support import HubServer
from tests.console.support import admin, sign_in

HOSTILE = "<img src=x onerror=alert(1)>"


async def test_a_team_is_created_and_its_channel_shows_live(page: Page, hub: HubServer) -> None:
    person = await admin(hub)
    member = await person.create_agent("scribe")
    await sign_in(page, hub)

    await page.get_by_role("link", name="Teams", exact=True).click()
    await expect(page.get_by_role("heading", name="Teams", level=1)).to_be_visible()
    await expect(page.locator(".empty")).to_contain_text("No teams yet")
    await page.get_by_role("button", name="New team").click()
    await page.get_by_label("Name", exact=True).fill("writers")
    await page.get_by_label("scribe", exact=True).check()
    await page.get_by_label("demo", exact=True).check()
    await page.get_by_role("button", name="Create team").click()

    await expect(page.get_by_role("heading", name="writers", level=1)).to_be_visible()
    members = page.get_by_role("region", name="Members")
    await expect(members.get_by_role("link", name="scribe")).to_be_visible()
    await expect(members.get_by_role("link", name="demo")).to_be_visible()
    await expect(page.locator(".connection")).to_have_attribute("data-state", "live")

    teams = (await person.call("GET", "/api/teams")).json()["teams"]
    team_id = next(t["id"] for t in teams if t["name"] == "writers")
    scribe = Agent("scribe")
    running = asyncio.create_task(scribe.run([hub.ws_url], member.token))
    try:
        await asyncio.wait_for(scribe.connected.wait(), 10)
        channel = scribe.team(team_id)
        await channel.publish({"chapter": 1}, topic="progress")
        await channel.publish({"note": HOSTILE}, topic="note")

        rows = page.locator(".log-list li")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_contain_text("progress")
        await expect(rows.nth(0)).to_contain_text('"chapter": 1')
        await expect(rows.nth(1)).to_contain_text(HOSTILE)  # shown as text...
        assert await page.locator(".log-list img").count() == 0  # ...never as markup
        seqs = [int(await rows.nth(i).get_attribute("data-seq") or -1) for i in range(2)]
        assert seqs == [1, 2]  # the channel's first two messages, in order
    finally:
        scribe.stop()
        with contextlib.suppress(Exception):
            await running

    # Deleting the team (confirmed) closes its channel and goes back to the list.
    await page.get_by_role("button", name="Delete team writers").click()
    await page.get_by_role("dialog").get_by_role("button", name="Delete team").click()
    await expect(page.get_by_role("heading", name="Teams", level=1)).to_be_visible()
    assert (await person.call("GET", f"/api/teams/{team_id}")).status_code == 404
