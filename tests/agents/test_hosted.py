"""Hosted agents: a hub started with ``demo`` runs the demo agent as its own process."""

from __future__ import annotations

import os

import pytest

from kai.config import HostedAgent
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


HUB_SECRETS = {
    "KAI_ADMIN_PASSWORD": "hub-admin-password-0123",
    "KAI_SECRET_KEY": "hub-signing-key-0123456789-abcdefghijklmnop",
    "KAI_DATABASE_URL": "postgresql+asyncpg://kai:db-password-0123@127.0.0.1/kai",
    "KAI_SMTP_URL": "smtp://kai:smtp-password-0123@127.0.0.1:2525",
    "KAI_REDIS_URL": "redis://:redis-password-0123@127.0.0.1:6379/0",
    "AWS_SECRET_ACCESS_KEY": "cloud-secret-0123",
}


async def test_a_hosted_agent_sees_none_of_the_hubs_secrets(
    start_server: ServerStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in HUB_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KAI_AGENT_LOG_LEVEL", "INFO")  # the agent's own settings pass
    probe = HostedAgent(name="probe", target="tests.agents.envprobe:agent", env={"GREETING": "hi"})
    async with start_server(hosted_agents=[probe]) as server:
        admin = await People(server).admin()

        async def probe_online() -> str | None:
            for agent in await admin.agents():
                if agent["name"] == "probe" and agent["status"] == "online":
                    return str(agent["id"])
            return None

        agent_id = await eventually(probe_online, 10, what="the probe agent online")
        answer = await admin.call(
            "POST", f"/api/agents/{agent_id}/command", json={"command": "environ"}
        )
    assert answer.status_code == 200, answer.text
    environ = answer.json()["result"]
    assert not set(HUB_SECRETS) & set(environ)
    leaked = [v for v in environ.values() for s in HUB_SECRETS.values() if s in v]
    assert leaked == []
    assert environ["GREETING"] == "hi"
    assert environ["KAI_AGENT_TOKEN"].startswith("kai_agent_")
    assert environ["KAI_AGENT_LOG_LEVEL"] == "INFO"
    assert environ["PATH"] == os.environ["PATH"]
    assert {k for k in environ if k.startswith("KAI_")} <= {
        "KAI_AGENT_TOKEN",
        "KAI_AGENT_URL",
        "KAI_AGENT_LOG_CONSOLE",
        "KAI_AGENT_LOG_LEVEL",
    }
