"""Deleting an agent with a backup, and ``kai agents restore`` bringing it back."""

from __future__ import annotations

import stat
from pathlib import Path

from kai.agents.protocol import Close
from tests.agents import sample
from tests.agents.processes import STOPPED_BY_HUB, Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, agent_socket
from tests.conftest import TEST_SECRET
from tests.helpers import assert_problem


def backups(server: HubServer) -> Path:
    return server.settings.data_dir / "backups" / "agents"


async def test_delete_with_backup_then_restore_from_the_cli(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    dev = await people.join("dev@example.com", role="developer")
    created = await dev.create_agent("keeper", description="kept safe", config={"k": 1})
    process = launcher.start(created.token)
    await dev.wait_status(created.agent_id, "online", process=process)
    await dev.wait_logs(created.agent_id, sample.SETUP_MESSAGE)
    before = await dev.agent(created.agent_id)
    logs_before = (await dev.logs(created.agent_id, order="asc"))["logs"]

    response = await dev.call("DELETE", f"/api/agents/{created.agent_id}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["agentId"] == created.agent_id
    assert body["backupCreated"] is True
    assert body["deletedAt"].endswith("Z")
    archive = backups(server) / f"{body['backupId']}.json.gz"
    assert archive.is_file()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert_problem(await dev.call("GET", f"/api/agents/{created.agent_id}"), 404)
    assert created.agent_id not in {a["id"] for a in await dev.agents()}
    # The running process was told (4004) and stopped for good.
    assert await process.exited() == STOPPED_BY_HUB, process.output()
    assert f"{Close.DELETED} Agent deleted" in process.output()

    settings = server.settings
    env = child_env(
        KAI_DATABASE_URL=settings.resolved_database_url,
        KAI_DATA_DIR=str(settings.data_dir),
        KAI_SECRET_KEY=TEST_SECRET,
    )
    restored = await run_cli("agents", "restore", str(archive), env=env)

    assert restored.returncode == 0, restored.stderr
    assert created.agent_id in restored.stdout
    after = await dev.agent(created.agent_id)
    for key in ("id", "name", "description", "type", "config", "ownerId", "capabilities"):
        assert after[key] == before[key], key
    assert after["status"] == "offline"
    logs_after = (await dev.logs(created.agent_id, order="asc"))["logs"]
    assert [(r["timestamp"], r["level"], r["message"]) for r in logs_after] == [
        (r["timestamp"], r["level"], r["message"]) for r in logs_before
    ]
    # It comes back with its old token.
    async with agent_socket(server.ws_url, created.token) as raw:
        assert raw.welcome["agentId"] == created.agent_id
        await raw.hello()
        await dev.wait_status(created.agent_id, "online")


async def test_delete_without_backup_leaves_no_archive(server: HubServer, people: People) -> None:
    admin = await people.admin()
    created = await admin.create_agent()

    response = await admin.call("DELETE", f"/api/agents/{created.agent_id}?backup=false")

    assert response.status_code == 200, response.text
    assert response.json()["backupCreated"] is False
    assert not backups(server).exists() or not any(backups(server).iterdir())
    assert_problem(await admin.call("GET", f"/api/agents/{created.agent_id}"), 404)
    assert_problem(await admin.call("DELETE", f"/api/agents/{created.agent_id}"), 404)
