"""Commands across nodes: two hub nodes on one PostgreSQL database and one Redis, the demo
agent (a real process) connected to the first, its callers on the second."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.agents.processes import Launcher
from tests.agents.support import People, agent_socket
from tests.realtime.client_support import Hubs, watch
from tests.work.support import DEMO, command_row, kept_alive, payload
from tests.work.test_socket import outcome


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_command_through_another_node_gets_the_agents_answer(
    hubs: Hubs, tmp_path: Path
) -> None:
    near, far = await hubs.pair()
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("demo")
    launcher = Launcher(near.ws_url, tmp_path)
    try:
        process = launcher.start(created.token, target=DEMO)
        await ann.wait_status(created.agent_id, "online", 20, process=process)
        assert near.hub.live.get(created.agent_id) is not None
        assert far.hub.live.get(created.agent_id) is None

        response = await ann.call(
            "POST",
            f"/api/agents/{created.agent_id}/command",
            json={"command": "echo", "parameters": {"via": "far"}},
        )
        assert response.status_code == 200, response.text
        body = payload(response)
        assert (body["success"], body["result"]) == (True, {"via": "far"})
        assert body["agentResponse"]["result"] == {"via": "far"}
        row = await command_row(near.hub, body["commandId"])
        assert (row.status, row.result) == ("succeeded", {"via": "far"})

        response = await ann.call(
            "POST",
            f"/api/agents/{created.agent_id}/command",
            json={"command": "fail", "parameters": {"message": "far away"}},
        )
        assert response.status_code == 200, response.text
        assert payload(response)["agentResponse"]["error"] == "far away"

        async with watch(far, created.agent_id, ann.token) as watcher:
            await watcher.send(
                {"type": "command_execute", "data": {"command": "echo", "params": {"ws": 1}}}
            )
            command_id, result = await outcome(watcher)
            assert result["type"] == "command_result"
            assert result["result"] == {"ws": 1}
        assert (await command_row(far.hub, command_id)).via == "ws"
        assert not near.hub.relay.reply_to
    finally:
        launcher.kill_all()


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_command_to_an_agent_whose_node_is_gone_does_not_hang(hubs: Hubs) -> None:
    near, far = await hubs.pair(agent_heartbeat_interval=0.2, agent_heartbeat_timeout=1.0)
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("raw")
    async with agent_socket(near.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw", commands=["work"])
        await ann.wait_status(created.agent_id, "online")
        await near.stop()

    started = time.monotonic()
    response = await ann.call(
        "POST",
        f"/api/agents/{created.agent_id}/command",
        json={"command": "work", "timeout": 1.5},
    )
    assert time.monotonic() - started < 3.0
    assert response.status_code in {409, 504}, response.text
