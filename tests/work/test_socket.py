"""``command_execute`` on the client WebSocket, with the demo agent as a real process, on
SQLite (embedded mode) and PostgreSQL with Redis (Redis mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.agents.processes import Launcher
from tests.agents.support import People, eventually
from tests.realtime.client_support import Hubs, Watcher, watch
from tests.work.support import DEMO, command_row, payload

COMMAND_TIMEOUT = 1.0
ANSWERS = {"command_result", "command_error"}
EVENTS = {"status_update", "log_stream", "agent_metrics"}


def execute(command: Any, params: Any = None) -> dict[str, Any]:
    return {"type": "command_execute", "data": {"command": command, "params": params}}


async def outcome(watcher: Watcher, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
    """The command's acknowledgement, then its result or error (the agent's events skipped)."""
    got = await watcher.until("command_acknowledged", timeout)
    assert not [m for m in got if m["type"] in ANSWERS], got
    acknowledged = got[-1]
    command_id = acknowledged["commandId"]
    assert isinstance(command_id, str)
    assert command_id
    while True:
        message = await watcher.recv(timeout)
        if message["type"] in ANSWERS:
            assert message["commandId"] == command_id, message
            return command_id, message
        assert message["type"] in EVENTS, message


async def test_command_execute_is_acknowledged_then_answered_or_failed(
    hubs: Hubs, tmp_path: Path
) -> None:
    server = await hubs.start(command_timeout=COMMAND_TIMEOUT)
    people = People(server)
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("demo")
    launcher = Launcher(server.ws_url, tmp_path)
    try:
        process = launcher.start(created.token, target=DEMO)
        await ann.wait_status(created.agent_id, "online", 20, process=process)

        async with watch(server, created.agent_id, ann.token) as watcher:
            assert (await watcher.recv())["type"] == "status_update"

            await watcher.send(execute("echo", {"text": "hi", "n": [1, 2]}))
            echo_id, result = await outcome(watcher)
            assert result == {
                "type": "command_result",
                "commandId": echo_id,
                "result": {"text": "hi", "n": [1, 2]},
                "success": True,
                "executionTime": result["executionTime"],
            }
            assert isinstance(result["executionTime"], float)
            assert result["executionTime"] > 0

            # params may be left out.
            await watcher.send({"type": "command_execute", "data": {"command": "echo"}})
            _, result = await outcome(watcher)
            assert (result["type"], result["result"]) == ("command_result", {})

            await watcher.send(execute("fail", {"message": "broken"}))
            fail_id, error = await outcome(watcher)
            assert error == {"type": "command_error", "commandId": fail_id, "error": "broken"}

            await watcher.send(execute("reboot"))
            _, error = await outcome(watcher)
            assert error["type"] == "command_error"
            assert "reboot" in error["error"]

            # The hub's command timeout is 1 s; the agent sleeps 3.
            await watcher.send(execute("sleep", {"seconds": 3}))
            sleep_id, error = await outcome(watcher, timeout=5)
            assert error["type"] == "command_error"
            assert "did not answer" in error["error"]

            # Malformed data: an error, and the connection stays open.
            for bad in [
                {"type": "command_execute"},
                {"type": "command_execute", "data": "echo"},
                execute(5),
                execute(""),
                execute("x" * 201),
                execute("echo", [1]),
                execute("echo", "text"),
            ]:
                await watcher.send(bad)
                answer = await watcher.recv()
                while answer["type"] in EVENTS:
                    answer = await watcher.recv()
                assert answer["type"] == "error", (bad, answer)
                assert answer["error"], answer
            await watcher.send(execute("echo", {"still": "open"}))
            _, result = await outcome(watcher)
            assert result["result"] == {"still": "open"}

        hub = server.hub
        echo_row = await command_row(hub, echo_id)
        assert (echo_row.via, echo_row.status, echo_row.user_id) == ("ws", "succeeded", ann.user_id)
        assert (await command_row(hub, fail_id)).status == "failed"
        assert (await command_row(hub, sleep_id)).status == "timeout"

        # Every decision on agents:command is audited, with the socket as the resource.
        admin = await people.admin()

        async def audited() -> list[dict[str, Any]] | None:
            response = await admin.call(
                "GET",
                "/api/audit",
                params={"permission": "agents:command", "userId": ann.user_id, "limit": 100},
            )
            assert response.status_code == 200, response.text
            events: list[dict[str, Any]] = payload(response)["events"]
            resource = f"WS /ws/agents/{created.agent_id} command_execute"
            mine = [e for e in events if e["resource"] == resource]
            return mine if len(mine) >= 6 else None

        events = await eventually(audited, 5, what="the audited command decisions")
        assert all(e["granted"] is True for e in events)
        assert all(e["kind"] == "permission" for e in events)
    finally:
        launcher.kill_all()
