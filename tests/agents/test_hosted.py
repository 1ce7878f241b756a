"""Hosted agents: a hub started with ``demo`` runs the demo agent as its own process."""

from __future__ import annotations

from tests.agents.conftest import ServerStarter
from tests.agents.support import People, eventually


async def test_the_demo_agent_is_online_soon_after_start(start_server: ServerStarter) -> None:
    async with start_server(demo=True) as server:
        admin = await People(server).admin()

        async def demo_online() -> dict[str, object] | None:
            for agent in await admin.agents():
                if agent["name"] == "demo" and agent["status"] == "online":
                    return agent
            return None

        demo = await eventually(demo_online, 10, what="the demo agent online")

        assert demo["ownerId"] == admin.user_id
        assert demo["type"] == "hosted"
        capabilities = demo["capabilities"]
        assert isinstance(capabilities, dict)
        assert {"echo", "sleep", "fail"} <= set(capabilities["commands"])
        assert capabilities["taskTypes"] == ["count"]
        assert capabilities["streaming"] is True
        await admin.wait_logs(str(demo["id"]), "demo agent ready")
