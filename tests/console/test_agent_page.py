"""One agent's page, driven against the demo agent: its live state, a streamed prompt, commands,
tasks with progress, uploads, and its log (live, filtered, paged, and always text)."""

from __future__ import annotations

import json
import re

from playwright.async_api import Page, expect

from tests.agents.support import HubServer
from tests.console.support import (
    PageLog,
    admin,
    command,
    demo_id,
    open_agent,
    recorded,
    sign_in,
    start_recording,
)

XSS = "<img src=x onerror=alert(1)>"


async def test_the_page_shows_status_health_uptime_and_capabilities(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    status = page.get_by_role("region", name="Status")
    await expect(status.locator("dd .status-online")).to_have_text("online")
    await expect(status.locator("dd .health-healthy")).to_have_text("healthy")
    uptime = status.locator("[data-field=uptime]")
    first = await uptime.text_content()
    assert first is not None
    assert re.fullmatch(r"(\d+[dhm] )*\d+s", first), first
    await expect(uptime).not_to_have_text(first)  # it ticks
    await expect(status).to_contain_text("echo, fail, log, sleep")
    await expect(status).to_contain_text("count")
    await expect(status.get_by_text("Messages in / out")).to_be_visible()


async def test_a_prompt_answer_streams_in_word_by_word(page: Page, hub: HubServer) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    prompt = "Tell me about <b>kai</b> and its many agents, one word at a time"
    expected = f"You asked: {prompt}. This is the demo agent answering."
    await start_recording(page, ".transcript", ".exchange:last-child .answer")

    await page.get_by_role("textbox", name="Your prompt").fill(prompt)
    await page.get_by_role("button", name="Send").click()
    exchange = page.locator(".exchange").last
    await expect(exchange.locator(".answer")).to_have_text(expected)
    await expect(exchange.locator(".stream-status")).to_have_text("Done")

    states = await recorded(page)
    assert states[-1] == expected
    partial = [s for s in states if s and s != expected]
    assert len(partial) >= 2, states  # seen growing, not arriving whole
    assert all(expected.startswith(s) for s in states), states  # only ever appended to
    assert await exchange.locator("b").count() == 0  # the echoed markup stayed text
    await expect(page.get_by_role("textbox", name="Your prompt")).to_have_value("")


async def test_a_task_progress_bar_reaches_100_percent(page: Page, hub: HubServer) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    tasks = page.get_by_role("region", name="Tasks")
    await expect(tasks.get_by_role("combobox", name="Task type")).to_have_value("count")
    await start_recording(page, ".task-list", ".task:first-child progress", "value")
    await tasks.get_by_label("Parameters (JSON object)").fill('{"steps": 4, "delay": 0.2}')
    await tasks.get_by_label("Priority").select_option("high")
    await tasks.get_by_role("button", name="Create task").click()

    task = tasks.locator(".task").first
    bar = task.locator("progress")
    await expect(bar).to_have_attribute("value", "100")
    await expect(task.locator(".progress-text")).to_have_text("100%")
    await expect(task.locator(".badge")).to_have_text("succeeded")
    await expect(task).to_contain_text("high priority")
    await expect(task).to_contain_text("step 4 of 4")
    await task.get_by_text("Result").click()
    assert json.loads(await task.locator("pre").inner_text()) == {"counted": 4}
    values = await recorded(page)
    assert values[-1] == "100"
    assert {"25", "50", "75"} & set(values), values  # it moved through the steps

    # A task that has not ended can be cancelled from its row.
    await tasks.get_by_label("Parameters (JSON object)").fill('{"steps": 100, "delay": 0.2}')
    await tasks.get_by_role("button", name="Create task").click()
    long = tasks.locator(".task").first
    await expect(long.locator(".badge")).to_have_text("running")
    await long.get_by_role("button", name=re.compile("^Cancel task")).click()
    await expect(long.locator(".badge")).to_have_text("cancelled")
    await expect(long.get_by_role("button", name=re.compile("^Cancel task"))).to_be_hidden()


async def test_an_upload_shows_its_progress_and_the_file_is_listed(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    files = page.get_by_role("region", name="Files")
    size = 3 * 1024 * 1024
    await files.get_by_label("File", exact=True).set_input_files(
        {"name": "report.txt", "mimeType": "text/plain", "buffer": b"k" * size}
    )
    await files.get_by_label("Metadata (JSON object, optional)").fill('{"purpose": "test"}')
    await files.get_by_role("button", name="Upload").click()

    await expect(files.locator(".upload-status")).to_have_text("Uploaded report.txt (3.0 MiB).")
    await expect(files.get_by_role("progressbar", name="Upload progress")).to_have_attribute(
        "value", "100"
    )
    await expect(files.locator(".upload .progress-text")).to_have_text("100%")
    row = files.get_by_role("row").filter(has_text="report.txt")
    await expect(row).to_contain_text("3.0 MiB")
    await expect(row).to_contain_text("text/plain")
    # The agent was told, fetched it, checked it, and said so in its log.
    logs = page.get_by_role("log", name="Log lines")
    await expect(
        logs.get_by_text(f"received file report.txt ({size} bytes, SHA-256 checked)")
    ).to_be_visible()

    # A refusal reads as the hub's reason.
    boss = await admin(hub)
    limited = await boss.call("PUT", "/api/config", json={"settings": {"uploadMaxBytes": 1024}})
    assert limited.status_code == 200, limited.text
    try:
        await files.get_by_label("File", exact=True).set_input_files(
            {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"b" * 4096}
        )
        await files.get_by_role("button", name="Upload").click()
        alert = files.get_by_role("alert")
        await expect(alert).to_contain_text("413")
        await expect(alert).to_contain_text("File is larger than 1024 bytes")
        await expect(files.locator(".upload-status")).to_have_text("Upload failed.")
        await expect(files.get_by_role("row").filter(has_text="big.bin")).to_have_count(0)
    finally:
        reset = await boss.call("PUT", "/api/config", json={"settings": {"uploadMaxBytes": None}})
        assert reset.status_code == 200, reset.text


async def test_a_command_runs_and_the_log_line_it_writes_appears_live(
    page: Page, hub: HubServer
) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    panel = page.get_by_role("region", name="Command")
    await panel.get_by_role("combobox", name="Command").select_option("log")
    message = "hello from the console, live"
    await panel.get_by_label("Parameters (JSON object)").fill(
        json.dumps({"message": message, "level": "warning"})
    )
    await panel.get_by_role("button", name="Run command").click()
    await expect(panel.locator("[data-outcome=succeeded]")).to_contain_text("log succeeded")
    assert json.loads(await panel.locator("pre").inner_text()) == {
        "logged": message,
        "level": "warning",
    }
    line = page.get_by_role("log", name="Log lines").locator(".log-row", has_text=message)
    await expect(line).to_be_visible()
    await expect(line.locator(".log-level")).to_have_text("WARNING")

    # A failing command says why.
    await panel.get_by_role("combobox", name="Command").select_option("fail")
    await panel.get_by_label("Parameters (JSON object)").fill('{"message": "on purpose, today"}')
    await panel.get_by_role("button", name="Run command").click()
    await expect(panel.locator("[data-outcome=failed]")).to_contain_text("on purpose, today")

    # The level filter applies to the lines shown and to live ones.
    logs = page.get_by_role("region", name="Logs")
    await logs.get_by_label("Level").select_option("ERROR")
    await expect(line).to_be_hidden()
    await logs.get_by_label("Level").select_option("WARNING")
    await expect(line).to_be_visible()
    boss, agent = await admin(hub), await demo_id(hub)
    await command(boss, agent, "log", message="quiet info line", level="info")
    await command(boss, agent, "log", message="loud warning line", level="warning")
    await expect(logs.get_by_text("loud warning line")).to_be_visible()
    await expect(logs.get_by_text("quiet info line")).to_be_hidden()


async def test_markup_in_a_log_line_is_shown_as_text_and_runs_nothing(
    page: Page, hub: HubServer, page_log: PageLog
) -> None:
    await sign_in(page, hub)
    await open_agent(page)
    await command(await admin(hub), await demo_id(hub), "log", message=XSS, level="warning")

    line = page.locator(".log-message", has_text=XSS)
    await expect(line).to_have_text(XSS)
    assert await page.locator("img").count() == 0
    assert await page.evaluate("() => document.images.length") == 0
    assert page_log.dialogs == []
    # The same line, read back over REST after a reload, is text too.
    await page.reload()
    await expect(page.locator(".log-message", has_text=XSS)).to_have_text(XSS)
    assert await page.locator("img").count() == 0
    assert page_log.dialogs == []


async def test_older_log_lines_page_in_when_scrolled_to(page: Page, hub: HubServer) -> None:
    boss, agent = await admin(hub), await demo_id(hub)
    for i in range(120):
        await command(boss, agent, "log", message=f"paged line {i:03}", level="info")
    await sign_in(page, hub)
    await open_agent(page)
    logs = page.get_by_role("log", name="Log lines")
    await expect(logs.get_by_text("paged line 119")).to_be_visible()
    oldest = logs.get_by_text("paged line 000", exact=True)
    await expect(oldest).to_have_count(0)  # the first page holds the newest 100 lines only

    await (
        page.get_by_role("region", name="Logs")
        .locator(".log-scroll")
        .evaluate("el => { el.scrollTop = 0; }")
    )
    await expect(oldest).to_have_count(1)
    rows = await logs.locator(".log-message").all_inner_texts()
    paged = [r for r in rows if r.startswith("paged line")]
    assert paged == [f"paged line {i:03}" for i in range(120)]  # in order, none twice
