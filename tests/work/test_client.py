"""The client SDK (``kai.sdk.client``) against a real hub and the demo agent as a real process:
every kind of work, files, administration, token refresh, and a watch that resumes by itself
after its connection drops, without a gap or a duplicate."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai.sdk.client import KaiApiError, KaiClient
from tests.agents.processes import Launcher
from tests.agents.support import HubServer, eventually
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.work.stream_support import demo_answer
from tests.work.support import DEMO


async def online(kai: KaiClient, agent_id: str) -> None:
    async def up() -> bool:
        return bool((await kai.agent_status(agent_id))["status"] == "online")

    await eventually(up, 20, what="the agent online")


async def test_the_client_drives_every_kind_of_work(
    server: HubServer, launcher: Launcher, tmp_path: Path
) -> None:
    async with KaiClient(server.base_url) as kai:
        await kai.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        assert (await kai.me())["user"]["email"] == ADMIN_EMAIL
        created = await kai.create_agent("demo", description="for the client")
        agent_id = created["agentId"]
        process = launcher.start(created["agentToken"], target=DEMO)
        await online(kai, agent_id)
        assert [a["id"] for a in await kai.agents()] == [agent_id]
        assert process.returncode is None

        answer = await kai.command(agent_id, "echo", {"text": "hi"})
        assert (answer["success"], answer["result"]) == (True, {"text": "hi"})

        task = await kai.create_task(agent_id, "count", {"steps": 2, "delay": 0}, priority="high")
        done = await kai.wait_task(task["taskId"])
        assert (done["status"], done["result"], done["progress"]) == (
            "succeeded",
            {"counted": 2},
            1.0,
        )
        listed = await kai.tasks(agent_id, status="succeeded")
        assert [t["taskId"] for t in listed["tasks"]] == [task["taskId"]]

        text = [c async for c in kai.stream_text(agent_id, "why?", options={"delay": 0})]
        assert text == demo_answer("why?")

        source = tmp_path / "notes.txt"
        source.write_bytes(b"bytes for the agent\n" * 1000)
        uploaded = await kai.upload(agent_id, source, metadata={"kind": "notes"})
        assert (uploaded["filename"], uploaded["size"]) == ("notes.txt", 20_000)
        assert (await kai.files(agent_id))["total"] == 1
        copy = await kai.download(uploaded["fileId"], tmp_path / "copy.txt")
        assert copy.read_bytes() == source.read_bytes()

        with pytest.raises(KaiApiError) as refused:
            await kai.command(agent_id, "reboot")
        assert refused.value.status == 400
        assert "reboot" in refused.value.detail
        with pytest.raises(KaiApiError) as missing:
            await kai.task("no-such-task")
        assert (missing.value.status, missing.value.detail) == (404, "Task not found")

        assert (await kai.health())["status"] == "ok"
        assert (await kai.ready())["status"] == "ready"
        assert "kai_http_requests_total" in await kai.metrics()
        changed = await kai.update_config(wsSendQueue=500)
        assert changed["settings"]["wsSendQueue"]["value"] == 500
        assert "task-dispatch" in {s["name"] for s in (await kai.services())["services"]}
        assert (await kai.users())["total"] >= 1
        assert (await kai.audit(limit=1))["total"] > 0

        # An access token that no longer works is traded for a new one by itself.
        kai.access_token = "expired"
        assert (await kai.agent(agent_id))["id"] == agent_id
        assert kai.access_token != "expired"


async def test_a_watch_resumes_after_its_connection_drops(
    server: HubServer, launcher: Launcher
) -> None:
    async with KaiClient(server.base_url) as kai:
        await kai.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        created = await kai.create_agent("demo")
        agent_id = created["agentId"]
        launcher.start(created["agentToken"], target=DEMO)
        await online(kai, agent_id)

        async with kai.watch(agent_id) as events:
            seqs: list[int] = []
            first = await kai.create_task(agent_id, "count", {"steps": 3, "delay": 0})
            second_id = ""
            async for event in events:
                seqs.append(event["seq"])
                if event["type"] == "task_update" and event["taskId"] == first["taskId"]:
                    if event["status"] == "succeeded" and not second_id:
                        # Drop the connection, then make events while it is down.
                        assert events._ws is not None
                        events._ws.transport.abort()
                        second = await kai.create_task(agent_id, "count", {"steps": 3})
                        second_id = second["taskId"]
                if (
                    event["type"] == "task_update"
                    and event["taskId"] == second_id
                    and event["status"] == "succeeded"
                ):
                    break
            assert events.reconnects == 1
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
