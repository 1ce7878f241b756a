"""Helpers of the console's browser tests: signing in, finding the demo agent, reading the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.agents.support import HubServer, People, Person, eventually
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD

# The browser tests watch the demo agent, not its heartbeats: on a busy two-core machine a
# one-second heartbeat timeout can mark it offline in the middle of a test.
PATIENT_AGENTS: dict[str, Any] = {
    "agent_heartbeat_interval": 0.5,
    "agent_heartbeat_timeout": 5.0,
    "agent_restart_grace": 30.0,
}


@dataclass
class PageLog:
    """What a page said and did besides drawing itself."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # every request and WebSocket the page opened


async def wait_for_demo(server: HubServer) -> None:
    async def online() -> bool:
        return any(live.ready for live in server.hub.live.all())

    await eventually(online, 20, what="the demo agent online")


async def admin(server: HubServer) -> Person:
    return await People(server).admin()


async def demo_id(server: HubServer) -> str:
    agents = await (await admin(server)).agents()
    return next(str(a["id"]) for a in agents if a["name"] == "demo")


async def command(person: Person, agent_id: str, name: str, **parameters: Any) -> None:
    """Run ``name`` on the agent over the API; it must succeed."""
    response = await person.call(
        "POST", f"/api/agents/{agent_id}/command", json={"command": name, "parameters": parameters}
    )
    assert response.status_code == 200, response.text
    assert response.json()["success"], response.text


async def sign_in(
    page: Page, server: HubServer, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> None:
    """Sign in through the form; done once the agents page shows."""
    await page.goto(server.base_url + "/")
    await page.get_by_label("Email", exact=True).fill(email)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Agents", level=1)).to_be_visible()


async def open_agent(page: Page, name: str = "demo") -> None:
    """From the agents page, open an agent's page and wait until it watches the agent live."""
    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    await expect(connection(page)).to_have_attribute("data-state", "live")


def connection(page: Page) -> Locator:
    """The agent page's connection indicator."""
    return page.locator(".connection")


async def session_tokens(page: Page) -> dict[str, str] | None:
    """What the console keeps in localStorage."""
    stored: dict[str, str] | None = await page.evaluate(
        "() => JSON.parse(localStorage.getItem('kai.session') || 'null')"
    )
    return stored


RECORDER = """([root, target, attribute]) => {
    const scope = document.querySelector(root);
    const read = () => {
        const el = scope.querySelector(target);
        if (!el) return null;
        return attribute ? el.getAttribute(attribute) : el.textContent;
    };
    window.__recorded = [];
    new MutationObserver(() => {
        const value = read();
        const last = window.__recorded[window.__recorded.length - 1];
        if (value !== null && value !== last) window.__recorded.push(value);
    }).observe(scope, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


async def start_recording(page: Page, root: str, target: str, attribute: str | None = None) -> None:
    """Record every value ``target`` (inside ``root``) takes from now on: its text, or one of
    its attributes. Read them with ``recorded``."""
    await page.evaluate(RECORDER, [root, target, attribute])


async def recorded(page: Page) -> list[str]:
    values: list[str] = await page.evaluate("() => window.__recorded")
    return values
