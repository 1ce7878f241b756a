"""``/ws/agent`` with real agent processes: hello, heartbeats, losing and finding the hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from kai.agents.live import LiveAgent
from kai.agents.socket import SocketChannel
from kai.protocol.agent import Close
from tests.agents import sample
from tests.agents.conftest import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT
from tests.agents.processes import STOPPED_BY_HUB, Launcher
from tests.agents.support import HubServer, People, agent_socket, refused
from tests.helpers import assert_problem, bearer

# How late the hub may notice a silent agent, beyond the timeout and a heartbeat interval.
SLACK = 1.0


async def test_agent_process_connects_and_declares_capabilities(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("sampler")
    process = launcher.start(created.token)

    view = await ann.wait_status(created.agent_id, "online", process=process)

    assert view["health"] == "healthy"
    assert view["name"] == "sampler"  # the record's name, not what the process calls itself
    capabilities = view["capabilities"]
    assert capabilities["name"] == "sample"
    assert capabilities["version"] == "1.2.3"
    assert capabilities["commands"] == sample.COMMANDS
    assert capabilities["taskTypes"] == sample.TASK_TYPES
    assert capabilities["streaming"] is True
    assert capabilities["files"] is False
    assert capabilities["maxConcurrency"] == 2
    assert capabilities["sdk"].startswith("kai-python/")
    assert view["lastActivity"] is not None
    assert view["uptime"] >= 0
    assert view["metrics"]["reconnects"] == 0

    status = (await ann.call("GET", f"/api/agents/{created.agent_id}/status")).json()
    assert status["agentId"] == created.agent_id
    assert (status["status"], status["health"]) == ("online", "healthy")
    assert status["uptime"] >= 0
    assert status["lastUpdate"].endswith("Z")

    # The setup hook's records arrive through the SDK's logging bridge, each at its level.
    await ann.wait_logs(created.agent_id, sample.SETUP_MESSAGE)
    records = (await ann.logs(created.agent_id))["logs"]
    levels = {r["message"]: r["level"] for r in records if r["logger"] == "tests.agents.sample"}
    assert levels == {message: level for level, message in sample.SETUP_RECORDS.items()}
    serious = (await ann.logs(created.agent_id, level="WARNING"))["logs"]
    assert {r["level"] for r in serious} <= {"WARNING", "ERROR", "CRITICAL"}
    assert {r["message"] for r in serious} >= {
        sample.SETUP_RECORDS["WARNING"],
        sample.SETUP_RECORDS["ERROR"],
    }


async def test_silent_agent_goes_offline_in_time_and_comes_back(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    process = launcher.start(created.token)
    await ann.wait_status(created.agent_id, "online", process=process)

    process.pause()
    paused_at = time.monotonic()
    bound = HEARTBEAT_TIMEOUT + HEARTBEAT_INTERVAL + SLACK
    view = await ann.wait_status(created.agent_id, "offline", timeout=bound)
    assert time.monotonic() - paused_at <= bound
    assert view["health"] == "unknown"
    assert view["uptime"] is None

    # Only a connected agent can be restarted.
    response = await ann.call("POST", f"/api/agents/{created.agent_id}/restart")
    assert_problem(response, 409)

    process.resume()
    view = await ann.wait_status(created.agent_id, "online", timeout=10, process=process)
    assert view["health"] == "healthy"
    assert view["metrics"]["reconnects"] >= 1


async def test_agent_reconnects_after_the_hub_restarts(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    process = launcher.start(created.token)
    before = await ann.wait_status(created.agent_id, "online", process=process)

    await server.restart()

    after = await ann.wait_status(created.agent_id, "online", timeout=20, process=process)
    assert after["metrics"]["reconnects"] > before["metrics"]["reconnects"]
    assert after["capabilities"] == before["capabilities"]
    assert process.returncode is None


async def test_a_second_connection_takes_over_and_the_first_is_closed(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    process = launcher.start(created.token)
    await ann.wait_status(created.agent_id, "online", process=process)

    async with agent_socket(server.ws_url, created.token) as first:
        assert first.welcome["agentId"] == created.agent_id
        # The process was replaced: the SDK stops for good instead of fighting back.
        assert await process.exited() == STOPPED_BY_HUB, process.output()
        assert f"stopped this agent: {Close.REPLACED} Replaced by a newer" in process.output()
        await first.hello()

        async with agent_socket(server.ws_url, created.token) as second:
            assert await first.closed() == (Close.REPLACED, "Replaced by a newer connection")
            await second.hello("second")
            view = await ann.wait_status(created.agent_id, "online")
            assert view["capabilities"]["name"] == "second"


async def test_an_agent_token_is_only_ever_its_own_agent(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    one = await ann.create_agent("one")
    two = await ann.create_agent("two")

    for created in (one, two, one):
        async with agent_socket(server.ws_url, created.token) as raw:
            assert raw.welcome["agentId"] == created.agent_id
            assert raw.welcome["heartbeatInterval"] == HEARTBEAT_INTERVAL
            assert raw.welcome["heartbeatTimeout"] == HEARTBEAT_TIMEOUT

    failed = (Close.AUTH_FAILED, "Authentication failed")
    assert await refused(server.ws_url, "kai_agent_" + "x" * 40) == failed
    assert await refused(server.ws_url, one.token + "x") == failed
    assert await refused(server.ws_url, None) == failed
    assert await refused(server.ws_url, ann.token) == failed  # a user's token is no agent's

    # And an agent token is no user's: the REST routes refuse it.
    response = await server.client.get("/api/agents", headers=bearer(one.token))
    assert_problem(response, 401)
    response = await server.client.get(f"/api/agents/{one.agent_id}", headers=bearer(one.token))
    assert_problem(response, 401)


async def test_an_agent_that_says_nothing_is_dropped(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    mute = await ann.create_agent("mute")
    quiet = await ann.create_agent("quiet")
    patience = HEARTBEAT_TIMEOUT + SLACK + 1

    async def never_says_hello() -> None:
        async with agent_socket(server.ws_url, mute.token) as raw:
            assert await raw.closed(patience) == (Close.PROTOCOL_ERROR, "No hello received")

    async def stops_heartbeating() -> None:
        async with agent_socket(server.ws_url, quiet.token) as raw:
            await raw.hello()
            await ann.wait_status(quiet.agent_id, "online")
            assert await raw.closed(patience) == (Close.HEARTBEAT_TIMEOUT, "Heartbeat timeout")

    await asyncio.gather(never_says_hello(), stops_heartbeating())
    view = await ann.wait_status(quiet.agent_id, "offline", timeout=1)
    assert view["health"] == "unknown"
    assert (await ann.agent(mute.agent_id))["status"] == "offline"


def _gone_socket() -> WebSocket:
    """The hub's end of a socket whose peer vanished unnoticed: a send fails as uvicorn's does."""

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: MutableMapping[str, Any]) -> None:
        raise OSError("the peer is gone")

    socket = WebSocket({"type": "websocket", "path": "/ws/agent", "headers": []}, receive, send)
    socket.application_state = WebSocketState.CONNECTED
    return socket


async def test_a_stale_connection_that_fails_to_close_does_not_lock_the_agent_out(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    gone = _gone_socket()
    stale = LiveAgent(created.agent_id, "stale", SocketChannel(gone), owner_id=ann.user_id)
    server.hub.live.attach(stale)

    for round_ in range(3):
        async with agent_socket(server.ws_url, created.token) as raw:
            assert (await raw.hello())["status"] == "online"
            live = server.hub.live.get(created.agent_id)
            assert live is not None
            assert live.connection_id == raw.welcome["connectionId"]
            if round_ == 0:  # it was asked to close, and its failure did not matter
                assert stale.closing
                assert gone.application_state == WebSocketState.DISCONNECTED
            raw.abort()  # the next connection finds this one gone without a close frame
    await ann.wait_status(created.agent_id, "offline")
    assert server.hub.live.get(created.agent_id) is None
