"""Deleting an agent with a backup, and ``kai agents restore`` bringing it back."""

from __future__ import annotations

import stat
from pathlib import Path

from kai.protocol.agent import Close
from tests.agents import sample
from tests.agents.processes import STOPPED_BY_HUB, Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, agent_socket, eventually
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


async def test_the_backup_holds_the_agents_work_and_brings_it_back(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com", role="developer")
    created = await ann.create_agent("demo")
    agent = f"/api/agents/{created.agent_id}"
    process = launcher.start(created.token, target="kai.demo:agent")
    await ann.wait_status(created.agent_id, "online", 20, process=process)

    answered = await ann.call("POST", f"{agent}/command", json={"command": "echo"})
    assert answered.status_code == 200, answered.text
    task = await ann.call(
        "POST", f"{agent}/task", json={"taskType": "count", "parameters": {"steps": 1, "delay": 0}}
    )
    assert task.status_code == 201, task.text
    task_id = task.json()["taskId"]

    async def task_done() -> bool:
        status = await ann.call("GET", f"/api/tasks/{task_id}/status")
        return bool(status.json()["status"] == "succeeded")

    await eventually(task_done, 10)
    stream = await ann.call(
        "POST", f"{agent}/stream-prompt", json={"prompt": "hi", "options": {"delay": 0}}
    )
    stream_id = stream.json()["streamId"]

    async def stream_done() -> bool:
        info = await ann.call("GET", f"/api/streams/{stream_id}")
        return bool(info.json()["status"] == "completed")

    await eventually(stream_done, 10)
    upload = await ann.call("POST", f"{agent}/upload", files={"file": ("notes.txt", b"kept bytes")})
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["fileId"]
    text_before = (await ann.call("GET", f"/api/streams/{stream_id}/events")).text

    deleted = await ann.call("DELETE", agent)
    assert deleted.status_code == 200, deleted.text
    assert_problem(await ann.call("GET", f"/api/tasks/{task_id}/status"), 404)
    assert_problem(await ann.call("GET", f"/api/files/{file_id}"), 404)
    archive = backups(server) / f"{deleted.json()['backupId']}.json.gz"
    settings = server.settings
    env = child_env(
        KAI_DATABASE_URL=settings.resolved_database_url,
        KAI_DATA_DIR=str(settings.data_dir),
        KAI_SECRET_KEY=TEST_SECRET,
    )
    restored = await run_cli("agents", "restore", str(archive), env=env)
    assert restored.returncode == 0, restored.stderr

    status = await ann.call("GET", f"/api/tasks/{task_id}/status")
    assert status.status_code == 200, status.text
    assert (status.json()["status"], status.json()["result"]) == ("succeeded", {"counted": 1})
    assert (await ann.call("GET", f"/api/streams/{stream_id}/events")).text == text_before
    downloaded = await ann.call("GET", f"/api/files/{file_id}")
    assert (downloaded.status_code, downloaded.content) == (200, b"kept bytes")


async def test_deleting_without_a_backup_removes_the_uploaded_bytes(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com", role="developer")
    created = await ann.create_agent()
    upload = await ann.call(
        "POST", f"/api/agents/{created.agent_id}/upload", files={"file": ("a.bin", b"gone soon")}
    )
    assert upload.status_code == 201, upload.text
    stored = [p for p in (server.settings.data_dir / "files").iterdir() if p.is_file()]
    assert len(stored) == 1
    assert stored[0].read_bytes() == b"gone soon"

    deleted = await ann.call("DELETE", f"/api/agents/{created.agent_id}?backup=false")

    assert deleted.status_code == 200, deleted.text
    assert not stored[0].exists()
