"""The agent page survives its socket dropping: it says so calmly, reconnects by itself, and
resumes from the last event it saw (the hub restarts on the same Redis event log, so nothing
needs a reload), without a gap or a repeat."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Page, WebSocket, expect

from tests.agents.conftest import ServerStarter
from tests.console.support import (
    PATIENT_AGENTS,
    admin,
    command,
    connection,
    demo_id,
    open_agent,
    recorded,
    sign_in,
    start_recording,
    wait_for_demo,
)
from tests.realtime.client_support import delete_keys


@dataclass
class Watched:
    """A WebSocket the page opened, and what it received."""

    url: str
    frames: list[dict[str, Any]] = field(default_factory=list)


async def test_the_agent_page_reconnects_and_resumes_from_its_last_seq(
    page: Page, start_server: ServerStarter, shared_redis_url: str
) -> None:
    sockets: list[Watched] = []

    def opened(socket: WebSocket) -> None:
        watched = Watched(socket.url)
        sockets.append(watched)
        socket.on("framereceived", lambda payload: watched.frames.append(json.loads(payload)))

    page.on("websocket", opened)
    prefix = f"kaitest:{uuid.uuid4().hex}:"
    settings = {
        "demo": True,
        "public_base_url": None,
        "redis_url": shared_redis_url,
        **PATIENT_AGENTS,
    }
    try:
        async with start_server(**settings, redis_prefix=prefix) as server:
            await wait_for_demo(server)
            await sign_in(page, server)
            await open_agent(page)
            agent = await demo_id(server)
            logs = page.get_by_role("log", name="Log lines")
            greeting = logs.locator(".log-message").filter(has_text="demo agent ready")
            await expect(greeting).to_have_count(1)
            watching = sockets[-1]
            assert f"/ws/agents/{agent}" in watching.url
            assert "since=" not in watching.url
            indicator = connection(page)
            await start_recording(page, ".page-head", ".connection")

            reconnecting = asyncio.create_task(
                expect(indicator).to_have_attribute("data-state", "reconnecting", timeout=30_000)
            )
            dropped_at = len(sockets)
            await server.restart()
            await reconnecting
            await wait_for_demo(server)
            await expect(indicator).to_have_attribute("data-state", "live", timeout=30_000)
            # The agent, restarted with the hub, greeted again while the page was away.
            await expect(greeting).to_have_count(2)

            seen = [f for f in watching.frames if "seq" in f]
            last_seq, epoch = seen[-1]["seq"], seen[-1]["epoch"]
            retries = sockets[dropped_at:]
            assert retries, "the page never reconnected"
            for retry in retries:
                assert f"since={last_seq}&epoch={epoch}" in retry.url, retry.url
            (resumed,) = [s for s in retries if s.frames]
            first, *replayed = [f for f in resumed.frames if "seq" in f]
            assert first["type"] == "status_update", first
            assert first["snapshot"], first
            assert first["seq"] == last_seq
            seqs = [f["seq"] for f in replayed]
            assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs))), seqs
            assert all(f["epoch"] == epoch for f in replayed)
            assert not [f for f in resumed.frames if f["type"] == "resync_required"]

            states = await recorded(page)
            assert any(s.startswith("Reconnecting…") for s in states), states
            assert states[-1] == "Live", states

            # And it is live again.
            await command(await admin(server), agent, "log", message="after the drop")
            await expect(logs.get_by_text("after the drop")).to_be_visible()
    finally:
        await delete_keys(shared_redis_url, prefix)
