"""Finding 7 of issue 12, against a real ``kai serve``: an agent whose TCP connection drops
without a close frame reconnects at once with the same token, every time."""

from __future__ import annotations

from tests.agents.support import agent_socket
from tests.hostile.conftest import HubStarter


async def test_an_agent_reconnects_at_once_after_abrupt_disconnects(
    start_hub: HubStarter,
) -> None:
    hub = start_hub()
    async with hub.client() as client:
        created = await client.post(
            "/api/agents", json={"agentData": {"name": "dropped"}}, headers=await hub.admin()
        )
        assert created.status_code == 201, created.text
        token, agent_id = created.json()["agentToken"], created.json()["agentId"]
        url = f"{hub.ws_url}/ws/agent"
        for _ in range(10):
            # Each round drops the connection while the hub is still answering its heartbeat,
            # and the next connection comes before the hub has noticed.
            async with agent_socket(url, token) as agent:
                assert agent.welcome["agentId"] == agent_id
                assert (await agent.hello("dropped"))["status"] == "online"
                await agent.send({"type": "heartbeat"})
                agent.abort()
        async with agent_socket(url, token) as agent:
            assert (await agent.hello("dropped"))["status"] == "online"
            await agent.heartbeat()
            view = await client.get(f"/api/agents/{agent_id}", headers=await hub.admin())
            assert view.json()["status"] == "online"
    hub.stop()
    output = hub.output()
    assert "connection failed" not in output
    assert "handling heartbeat failed" not in output
    assert "Application shutdown complete" in output
