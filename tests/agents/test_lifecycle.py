"""Restarting agents and rotating their tokens, end to end with real agent processes."""

from __future__ import annotations

from kai.protocol.agent import Close
from tests.agents import sample
from tests.agents.processes import STOPPED_BY_HUB, Launcher
from tests.agents.support import HubServer, People, agent_socket, refused
from tests.helpers import assert_problem


async def test_restart_answers_once_the_agent_is_back(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    process = launcher.start(created.token)
    await ann.wait_status(created.agent_id, "online", process=process)
    await ann.wait_logs(created.agent_id, sample.SETUP_MESSAGE)

    response = await ann.call(
        "POST",
        f"/api/agents/{created.agent_id}/restart",
        json={"options": {"timeout": 20, "reason": "test"}},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["agentId"] == created.agent_id
    assert body["previousStatus"] == "online"
    assert body["currentStatus"] == "online"
    assert isinstance(body["restartTime"], float)
    assert 0 < body["restartTime"] < 20
    view = await ann.agent(created.agent_id)
    assert view["status"] == "online"
    assert process.returncode is None  # the same process restarted itself

    # The agent tore down and set up again: its hooks' records say so.
    await ann.wait_logs(created.agent_id, sample.SETUP_MESSAGE, count=2)
    await ann.wait_logs(created.agent_id, sample.TEARDOWN_MESSAGE, count=1)


async def test_restart_of_an_offline_agent_is_a_conflict(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()

    response = await ann.call("POST", f"/api/agents/{created.agent_id}/restart")

    assert_problem(response, 409)
    assert (await ann.agent(created.agent_id))["status"] == "offline"


async def test_restart_waits_no_longer_than_its_timeout(server: HubServer, people: People) -> None:
    """An agent that ignores the restart: the route answers when ``options.timeout`` runs out,
    and the agent, still connected, reads as it did before instead of `restarting` forever."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello()
        response = await ann.call(
            "POST",
            f"/api/agents/{created.agent_id}/restart",
            json={"options": {"timeout": 0.5}},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is False
        assert body["previousStatus"] == "online"
        assert body["currentStatus"] == "online"
        assert body["restartTime"] is None
        assert (await raw.recv_type("restart"))["reason"] == "requested"
        assert (await ann.agent(created.agent_id))["status"] == "online"


async def test_rotating_the_token_cuts_off_the_old_one(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    old = launcher.start(created.token)
    await ann.wait_status(created.agent_id, "online", process=old)

    response = await ann.call("POST", f"/api/agents/{created.agent_id}/token")

    assert response.status_code == 200, response.text
    body = response.json()
    new_token = body["agentToken"]
    assert body["agentId"] == created.agent_id
    assert new_token != created.token
    # The old connection was closed with 4001; the SDK stops for good.
    assert await old.exited() == STOPPED_BY_HUB, old.output()
    assert f"{Close.TOKEN_REVOKED} Token rotated" in old.output()
    assert await refused(server.ws_url, created.token) == (
        Close.AUTH_FAILED,
        "Authentication failed",
    )
    # A process with the old token does not retry forever; one with the new token connects.
    stale = launcher.start(created.token)
    fresh = launcher.start(new_token)
    assert await stale.exited() == STOPPED_BY_HUB, stale.output()
    view = await ann.wait_status(created.agent_id, "online", process=fresh)
    assert view["capabilities"]["commands"] == sample.COMMANDS
