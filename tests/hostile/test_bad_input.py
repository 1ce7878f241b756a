"""Finding 10 of issue 12, against a real ``kai serve``: input past what the hub can hold is
refused with a 422 problem or an ``error`` message, never a 500 or a cut-off answer, and the
agent it was meant for stays connected."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.agents.support import agent_socket
from tests.helpers import assert_problem
from tests.hostile.conftest import HubStarter

HUGE = "99999999999999999999"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


async def next_error(watcher: ClientConnection) -> dict[str, Any]:
    """The next ``error`` message, past the agent's events (its stream ended as it left)."""
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(watcher.recv(), 5))
        if message["type"] == "error":
            return message
        assert "seq" in message, message  # only events may come first


async def test_bad_paging_deep_json_and_long_event_ids_are_refused_not_500(
    start_hub: HubStarter,
) -> None:
    hub = start_hub()
    admin = await hub.admin()
    async with hub.client() as client:
        created = await client.post(
            "/api/agents", json={"agentData": {"name": "target"}}, headers=admin
        )
        token, agent_id = created.json()["agentToken"], created.json()["agentId"]
        async with agent_socket(f"{hub.ws_url}/ws/agent", token) as agent:
            await agent.hello("target", commands=["echo"], taskTypes=["t"], streaming=True)

            for path in ("logs", "tasks", "files"):
                response = await client.get(
                    f"/api/agents/{agent_id}/{path}", params={"offset": HUGE}, headers=admin
                )
                assert_problem(response, 422)

            for depth in (300, 600, 900):
                body = {"command": "echo", "parameters": nested(depth)}
                response = await client.post(
                    f"/api/agents/{agent_id}/command", json=body, headers=admin
                )
                assert_problem(response, 422)
                body = {"taskType": "t", "parameters": nested(depth)}
                response = await client.post(
                    f"/api/agents/{agent_id}/task", json=body, headers=admin
                )
                assert_problem(response, 422)

            # A real stream: a Last-Event-ID of 400 digits is refused before any event.
            opened = await client.post(
                f"/api/agents/{agent_id}/stream-prompt", json={"prompt": "hi"}, headers=admin
            )
            assert opened.status_code == 200, opened.text
            assert (await agent.recv_type("prompt"))["prompt"] == "hi"
            events = opened.json()["streamUrl"]
            response = await client.get(events, headers={**admin, "Last-Event-ID": "9" * 400})
            assert_problem(response, 422)
            assert "text/event-stream" not in response.headers["content-type"]

            # The agent's own deep message is refused as a message; the connection stays.
            deep_log = {"type": "log", "records": [{"message": "deep", "extra": nested(600)}]}
            await agent.send(json.dumps(deep_log))  # orjson itself refuses to write it
            refused = await agent.recv_type("error")
            assert refused["error"] == "Invalid message", refused
            assert "nested deeper than" in orjson.dumps(refused["details"]).decode()
            await agent.heartbeat()
            view = await client.get(f"/api/agents/{agent_id}", headers=admin)
            assert view.json()["status"] == "online"

        # A watcher's deep message and a resume past any seq are answered with errors.
        watch_url = f"{hub.ws_url}/ws/agents/{agent_id}?since={'9' * 400}"
        async with connect(
            watch_url, additional_headers=admin, compression=None, open_timeout=5
        ) as watcher:
            first = orjson.loads(await watcher.recv())
            assert first["type"] == "status_update", first  # the bad since is ignored
            await watcher.send(json.dumps({"type": "heartbeat", "x": nested(500)}))
            answer = await next_error(watcher)
            assert "nested deeper than" in answer["details"]
            await watcher.send(orjson.dumps({"type": "resume", "since": 2**64 - 1}).decode())
            answer = await next_error(watcher)
            assert answer == {
                "type": "error",
                "error": "resume needs since: a seq number from 0 to 9007199254740991",
            }
    assert hub.alive()
    assert "unhandled error" not in hub.output()
    assert "Traceback" not in hub.output()
