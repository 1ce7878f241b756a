"""The admin pages: users and roles, the audit log, services and runtime configuration for an
admin; none of them for a user without the rights, who gets the hub's 403 when forcing one."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.agents.support import HubServer, People
from tests.console.support import admin, demo_id, sign_in
from tests.helpers import PASSWORD


async def test_an_admin_changes_a_role_and_reads_the_audit_log(page: Page, hub: HubServer) -> None:
    ann = await People(hub).join("ann@example.com")
    denied = await ann.call("GET", "/api/users")  # a denial for the audit log to show
    assert denied.status_code == 403

    await sign_in(page, hub)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    await expect(page.get_by_role("heading", name="Users and roles")).to_be_visible()
    await page.get_by_label("Email or name contains").fill("ann@")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(1)
    await rows.get_by_label("Role of ann@example.com").select_option("developer")
    await expect(
        page.locator(".notice").filter(has_text="ann@example.com: role changed")
    ).to_be_visible()
    listed = await (await admin(hub)).call("GET", "/api/users", params={"q": "ann@"})
    assert listed.json()["users"][0]["role"] == "developer"

    await page.get_by_role("link", name="Audit").click()
    await expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    await page.get_by_label("User id").fill(ann.user_id)
    await page.get_by_label("Decision").select_option("denied")
    await page.get_by_role("button", name="Apply filters").click()
    entry = page.locator("tbody tr").filter(has_text="system:admin")
    await expect(entry).to_have_count(1)
    await expect(entry).to_contain_text("denied")
    await expect(entry).to_contain_text("GET /api/users")

    await page.get_by_label("Decision").select_option("granted")
    await page.get_by_label("Permission or event").fill("no:such-permission")
    await page.get_by_role("button", name="Apply filters").click()
    await expect(page.get_by_text("No audit entries match these filters.")).to_be_visible()


async def test_an_admin_acts_on_services_and_changes_runtime_settings(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    await page.get_by_role("link", name="Services").click()
    row = page.locator("tr[data-service='log-retention']")
    await expect(row.locator(".state-running")).to_be_visible()
    await row.get_by_role("button", name="Stop log-retention").click()
    dialog = page.get_by_role("dialog", name="Stop log-retention?")
    await dialog.get_by_role("button", name="Stop").click()
    await expect(row.locator(".state-stopped")).to_be_visible()
    await row.get_by_role("button", name="Restart log-retention").click()
    await expect(row.locator(".state-running")).to_be_visible()
    broker = page.locator("tr[data-service='broker']")
    await expect(broker.get_by_role("button")).to_have_count(0)  # it allows no action

    await page.get_by_role("link", name="Config").click()
    setting = page.locator("tr[data-setting='wsRateLimit']")
    await expect(setting).to_contain_text("default")
    await setting.get_by_label("wsRateLimit").fill("0")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("alert").filter(has_text="Invalid settings")).to_be_visible()
    await expect(setting.locator(".field-error")).not_to_be_empty()

    await setting.get_by_label("wsRateLimit").fill("120")
    await page.get_by_role("button", name="Save changes").click()
    await expect(setting).to_contain_text("runtime")
    config = (await (await admin(hub)).call("GET", "/api/config")).json()["settings"]
    assert config["wsRateLimit"]["value"] == 120
    await setting.get_by_role("button", name="Reset wsRateLimit").click()
    await expect(setting).to_contain_text("default")
    await expect(setting.get_by_label("wsRateLimit")).to_have_value("60")
    config = (await (await admin(hub)).call("GET", "/api/config")).json()["settings"]
    assert config["wsRateLimit"]["source"] == "default"


async def test_a_user_without_admin_rights_sees_no_admin_pages(page: Page, hub: HubServer) -> None:
    bob = await People(hub).join("bob@example.com")
    await sign_in(page, hub, bob.email, PASSWORD)
    await expect(page.get_by_text("No agents yet.")).to_be_visible()  # the demo is not bob's
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Agents")).to_be_visible()
    for hidden in ("Users", "Audit", "Services"):
        await expect(nav.get_by_role("link", name=hidden)).to_have_count(0)

    forced = {
        "users": "Insufficient permissions: system:admin",
        "audit": "Insufficient permissions: system:admin",
        "services": "Insufficient permissions: services:read",
    }
    for page_name, detail in forced.items():
        await page.goto(f"{hub.base_url}/#/admin/{page_name}")
        alert = page.get_by_role("alert").filter(has_text=detail)
        await expect(alert).to_contain_text("403")
        await expect(page.locator("table")).to_have_count(0)

    # Every role may read the runtime settings (config:read); only some may change them.
    await page.goto(f"{hub.base_url}/#/admin/config")
    await expect(page.locator("tr[data-setting='wsRateLimit'] input")).to_be_disabled()
    await expect(page.get_by_role("button", name="Save changes")).to_have_count(0)

    # Someone else's agent is not there at all.
    await page.goto(f"{hub.base_url}/#/agents/{await demo_id(hub)}")
    await expect(page.get_by_role("heading", name="Agent not found")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("404")
