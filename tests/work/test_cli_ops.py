"""The operators' commands as real processes beside a real hub: agents listed with their status,
logs printed (and followed) as text, tasks watched to the end, a backup written, users listed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from kai.agents import backup
from tests.agents.processes import REPO_ROOT, Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, agent_socket
from tests.conftest import TEST_SECRET
from tests.helpers import ADMIN_EMAIL, PASSWORD
from tests.work.support import DEMO, kept_alive

MARKUP = "[bold red]not markup[/bold red] <img src=x onerror=alert(1)>"


def environment(server: HubServer) -> dict[str, str]:
    settings = server.settings
    return child_env(
        KAI_DATABASE_URL=settings.resolved_database_url,
        KAI_DATA_DIR=str(settings.data_dir),
        KAI_SECRET_KEY=TEST_SECRET,
        COLUMNS="200",
    )


async def test_agents_tasks_backups_and_users_from_the_command_line(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("demo")
    process = launcher.start(created.token, target=DEMO)
    await ann.wait_status(created.agent_id, "online", 20, process=process)
    await ann.wait_logs(created.agent_id, "demo agent ready")
    env = environment(server)

    listed = await run_cli("agents", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if created.agent_id in line)
    assert "demo" in row
    assert "online" in row
    assert "ann@example.com" in row

    for steps in (2, 3):
        response = await ann.call(
            "POST",
            f"/api/agents/{created.agent_id}/task",
            json={"taskType": "count", "parameters": {"steps": steps, "delay": 0.05}},
        )
        assert response.status_code == 201, response.text
    watched = await run_cli("tasks", "watch", "demo", "--until-done", env=env)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.count("succeeded") >= 2
    assert "100%" in watched.stdout

    logs = await run_cli("agents", "logs", created.agent_id, "-n", "50", env=env)
    assert logs.returncode == 0, logs.stderr
    assert "demo agent ready" in logs.stdout
    assert "counted to 3" in logs.stdout

    made = await run_cli("agents", "backup", created.agent_id, env=env)
    assert made.returncode == 0, made.stderr
    path = made.stdout.split("backup written to", 1)[1].split()[0]
    document = backup.read(Path(path))
    assert document["agent"]["id"] == created.agent_id
    assert len(document["work"]["tasks"]) == 2
    assert (await ann.agent(created.agent_id))["id"] == created.agent_id  # not deleted

    accounts = await run_cli("users", "list", env=env)
    assert accounts.returncode == 0, accounts.stderr
    assert ADMIN_EMAIL in accounts.stdout
    assert "ann@example.com" in accounts.stdout

    unknown = await run_cli("agents", "logs", "nobody", env=env)
    assert unknown.returncode == 1
    assert "No agent 'nobody'" in unknown.stderr


async def test_logs_are_followed_and_printed_as_text(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    env = environment(server)
    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw")
        await raw.send({"type": "log", "records": [{"message": "before", "level": "INFO"}]})
        await ann.wait_logs(created.agent_id, "before")
        follower = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kai",
            "agents",
            "logs",
            created.agent_id,
            "--follow",
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert follower.stdout is not None
            first = await asyncio.wait_for(follower.stdout.readline(), 30)
            assert "before" in first.decode()
            await raw.send({"type": "log", "records": [{"message": MARKUP, "level": "ERROR"}]})
            later = await asyncio.wait_for(follower.stdout.readline(), 30)
            assert MARKUP in later.decode()
            assert "ERROR" in later.decode()
        finally:
            follower.terminate()
            await follower.wait()


async def test_a_file_is_uploaded_with_a_progress_bar(
    server: HubServer, people: People, tmp_path: Path
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("inbox")
    source = tmp_path / "report.bin"
    source.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    env = {**environment(server), "KAI_PASSWORD": PASSWORD}
    uploaded = await run_cli(
        "files",
        "upload",
        created.agent_id,
        str(source),
        "--url",
        server.base_url,
        "--email",
        "ann@example.com",
        "--metadata",
        '{"kind": "report"}',
        env=env,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    assert "uploaded report.bin (1048576 bytes" in uploaded.stdout
    listed = (await ann.call("GET", f"/api/agents/{created.agent_id}/files")).json()
    assert [(f["filename"], f["size"], f["metadata"]) for f in listed["files"]] == [
        ("report.bin", 1_048_576, {"kind": "report"})
    ]
    stored = listed["files"][0]["fileId"]
    download = await ann.call("GET", f"/api/files/{stored}")
    assert download.content == source.read_bytes()

    refused = await run_cli(
        "files",
        "upload",
        "nobody",
        str(source),
        "--url",
        server.base_url,
        "--email",
        "ann@example.com",
        env=env,
    )
    assert refused.returncode == 1
    assert "404 Agent not found" in refused.stdout
