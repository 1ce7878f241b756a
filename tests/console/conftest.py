"""Fixtures of the console's browser tests: Debian's Chromium driven by Playwright's async API,
against real hubs that serve the console and host the demo agent.

The browser tests run on SQLite only: the API they drive is tested on both databases elsewhere.
One browser serves the whole session and one hub each module (its tests leave it as they found
it); every test gets a fresh browser context, so nothing is shared between tests but the hub.
When a test fails, its screenshot and the page's console are saved in test-artifacts/console/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Error,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from kai.config import Settings
from tests.agents.conftest import fast_settings, start_server
from tests.agents.processes import REPO_ROOT
from tests.agents.support import HubServer, hub_server
from tests.conftest import TEST_SECRET, Mailbox
from tests.console.support import PATIENT_AGENTS, PageLog, wait_for_demo
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.realtime.client_support import shared_redis_url
from tests.services import free_port

__all__ = ["fast_settings", "shared_redis_url", "start_server"]

CHROMIUM = (Path("/usr/lib/chromium/chromium"), Path("/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "console"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

FAILED = pytest.StashKey[bool]()

expect.set_options(timeout=10_000)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember a failed test, so that its page can be saved while it is torn down."""
    report = yield
    if report.failed and report.when == "call":
        item.stash[FAILED] = True
    return report


# -- the database and the hub ------------------------------------------------------------------


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only, for the hubs ``start_server`` starts here."""
    path = tmp_path / "kai.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


def module_settings(folder: Path, mail_url: str, **overrides: Any) -> Settings:
    """The suite's hub settings (cheap Argon2, quick audit) on a database of its own."""
    values: dict[str, Any] = {
        "port": free_port(),
        "data_dir": folder / "data",
        "database_url": f"sqlite+aiosqlite:///{folder / 'kai.db'}",
        "secret_key": TEST_SECRET,
        "smtp_url": mail_url,
        "public_base_url": None,  # the hub's own origin is http://127.0.0.1:port, as browsed
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "argon2_parallelism": 1,
        "audit_flush_interval": 0.05,
        "auth_rate_limit": 1000,
        "registration": "open",
        **PATIENT_AGENTS,
        "demo": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, Any]:
    """Settings a module's shared hub starts with (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
async def hub(
    sqlite_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    smtp_server: Mailbox,
    hub_overrides: dict[str, Any],
) -> AsyncIterator[HubServer]:
    """A hub hosting the demo agent, served on a real port, shared by the module's tests."""
    folder = tmp_path_factory.mktemp("console-hub")
    shutil.copy(sqlite_template, folder / "kai.db")
    async with hub_server(module_settings(folder, smtp_server.url, **hub_overrides)) as server:
        await wait_for_demo(server)
        yield server


# -- the browser -------------------------------------------------------------------------------


def chromium() -> Path:
    for path in CHROMIUM:
        if path.exists():
            return path
    pytest.fail(
        "Chromium is not installed: the console's browser tests drive Debian's chromium "
        "(/usr/bin/chromium). Install it with `apt-get install chromium`; never run "
        "`playwright install`.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session."""
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
async def page(
    browser: Browser, page_log: PageLog, request: pytest.FixtureRequest
) -> AsyncIterator[Page]:
    """A page in a fresh context (its own storage), its console, errors and dialogs recorded.

    A test that fails leaves its screenshot and console behind; one that passes must not have
    thrown an uncaught error in the page or broken the Content-Security-Policy.
    """
    context = await browser.new_context(viewport=VIEWPORT)
    opened = await context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        page_log.console.append(f"[{message.type}] {message.text}")

    async def on_dialog(dialog: Dialog) -> None:
        # The console never opens alert/confirm/prompt: any dialog is a finding, recorded.
        page_log.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: page_log.errors.append(str(error)))
    opened.on("dialog", on_dialog)
    opened.on("request", lambda sent: page_log.urls.append(sent.url))
    opened.on("websocket", lambda socket: page_log.urls.append(socket.url))
    try:
        yield opened
    finally:
        failed = request.node.stash.get(FAILED, False)
        if failed:
            await _save(opened, page_log, request.node.nodeid)
        await context.close()
    if not failed:
        assert not page_log.errors, f"uncaught errors in the page: {page_log.errors}"
        refused = [line for line in page_log.console if "Content Security Policy" in line]
        assert not refused, f"the page broke its Content-Security-Policy: {refused}"


async def _save(page: Page, log: PageLog, nodeid: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")
    try:
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    except Error as exc:  # a page that crashed has no picture to give
        log.console.append(f"[screenshot failed] {exc}")
    lines = [*log.console, *(f"[pageerror] {e}" for e in log.errors)]
    lines += [f"[dialog] {d}" for d in log.dialogs]
    (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(lines) + "\n")
