"""``POST /api/agents/{agentId}/command``: real agent processes (the demo agent) and raw agents
whose answers the tests time themselves."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.agents.processes import Launcher
from tests.agents.support import HubServer, People, Person, agent_socket
from tests.work.support import DEMO, command_row, command_rows, kept_alive, payload

DEMO_COMMANDS = ["echo", "fail", "log", "sleep"]


async def command(person: Person, agent_id: str, body: Any) -> Any:
    return await person.call("POST", f"/api/agents/{agent_id}/command", json=body)


async def test_a_demo_agent_answers_fails_refuses_and_times_out_and_each_command_is_recorded(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("demo")
    process = launcher.start(created.token, target=DEMO)
    await ann.wait_status(created.agent_id, "online", 20, process=process)
    hub = server.hub

    # echo: the parameters come back, with the agent's own answer beside them.
    params = {"text": "hello", "n": 3, "nested": {"list": [1, "two", None]}}
    response = await command(ann, created.agent_id, {"command": "echo", "parameters": params})
    assert response.status_code == 200, response.text
    echoed = payload(response)
    assert echoed["success"] is True
    assert echoed["result"] == params
    assert isinstance(echoed["commandId"], str)
    assert echoed["commandId"]
    assert isinstance(echoed["executionTime"], float)
    assert echoed["executionTime"] > 0
    assert echoed["agentResponse"] == {"success": True, "result": params, "error": None}

    # A failing command is an answer too: 200, success false, the agent's error.
    response = await command(
        ann, created.agent_id, {"command": "fail", "parameters": {"message": "no luck"}}
    )
    assert response.status_code == 200, response.text
    failed = payload(response)
    assert failed["success"] is False
    assert failed["result"] is None
    assert failed["agentResponse"]["success"] is False
    assert failed["agentResponse"]["error"] == "no luck"
    assert failed["executionTime"] > 0

    # A command the agent did not declare: 400, listing the ones it did.
    response = await command(ann, created.agent_id, {"command": "reboot"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    refused = payload(response)
    assert refused["commands"] == DEMO_COMMANDS
    assert "reboot" in refused["detail"]

    # No answer in time: 504 with the command's id, after about the timeout.
    started = asked = time.monotonic()
    response = await command(
        ann, created.agent_id, {"command": "sleep", "parameters": {"seconds": 2}, "timeout": 0.4}
    )
    took = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    timed_out = payload(response)
    assert isinstance(timed_out["commandId"], str)
    assert 0.35 <= took < 1.5, took

    # Without waiting for the answer: at once, no result.
    started = time.monotonic()
    response = await command(
        ann,
        created.agent_id,
        {"command": "sleep", "parameters": {"seconds": 1}, "expectsResponse": False},
    )
    assert time.monotonic() - started < 0.8
    assert response.status_code == 200, response.text
    sent = payload(response)
    assert sent["success"] is True
    assert sent["result"] is None
    assert sent["agentResponse"] is None

    # The sleeper answers about 2 s after it started: its record stays a timeout.
    timed_out_id = timed_out["commandId"]
    await asyncio.sleep(max(0.0, 2.3 - (time.monotonic() - asked)))

    rows = await command_rows(hub, created.agent_id)
    assert set(rows) == {
        echoed["commandId"],
        failed["commandId"],
        timed_out_id,
        sent["commandId"],
    }
    echo_row = rows[echoed["commandId"]]
    assert (echo_row.user_id, echo_row.command, echo_row.via) == (ann.user_id, "echo", "rest")
    assert (echo_row.status, echo_row.result, echo_row.error) == ("succeeded", params, None)
    assert echo_row.parameters == params
    assert echo_row.execution_time is not None
    assert abs(echo_row.execution_time - echoed["executionTime"]) < 1e-3
    assert echo_row.completed_at is not None
    fail_row = rows[failed["commandId"]]
    assert (fail_row.status, fail_row.error, fail_row.result) == ("failed", "no luck", None)
    assert fail_row.execution_time is not None
    timeout_row = rows[timed_out_id]
    assert timeout_row.status == "timeout"
    assert timeout_row.error is not None
    assert timeout_row.result is None
    assert timeout_row.execution_time is None
    sent_row = rows[sent["commandId"]]
    assert (sent_row.status, sent_row.result) == ("sent", None)
    assert all(row.user_id == ann.user_id for row in rows.values())


async def test_who_may_command_which_agent_and_with_what_body(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    robot = await people.join("robot@example.com", role="agent")
    created = await ann.create_agent()
    echo = {"command": "echo", "parameters": {"x": 1}}

    # Never connected: 409.
    response = await command(ann, created.agent_id, echo)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    # Someone else's agent, or none at all: 404, whatever it is doing.
    response = await command(bob, created.agent_id, echo)
    assert response.status_code == 404, response.text
    response = await command(ann, "no-such-agent", echo)
    assert response.status_code == 404, response.text
    # The agent role may not command: 403 naming the permission.
    response = await command(robot, created.agent_id, echo)
    assert response.status_code == 403, response.text
    assert payload(response)["detail"] == "Insufficient permissions: agents:command"
    # Without a token: 401.
    response = await server.client.post(f"/api/agents/{created.agent_id}/command", json=echo)
    assert response.status_code == 401, response.text

    bad_bodies: list[Any] = [
        {},
        {"command": ""},
        {"command": "x" * 201},
        {"command": 5},
        {"command": "echo", "parameters": [1, 2]},
        {"command": "echo", "timeout": 0},
        {"command": "echo", "timeout": -1},
        {"command": "echo", "timeout": 301},
        {"command": "echo", "timeout": "soon"},
        {"command": "echo", "expectsResponse": "maybe"},
        {"command": "echo", "unknown": True},
        [echo],
        "echo",
    ]
    for body in bad_bodies:
        response = await command(ann, created.agent_id, body)
        assert response.status_code == 422, (body, response.text)
    assert await command_rows(server.hub, created.agent_id) == {}


async def test_an_answer_after_the_deadline_never_reaches_a_later_caller(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw", commands=["work"])
        await ann.wait_status(created.agent_id, "online")

        # A: the agent takes it and stays silent past the deadline.
        first = asyncio.create_task(
            command(
                ann, created.agent_id, {"command": "work", "parameters": {"n": "A"}, "timeout": 0.3}
            )
        )
        sent_a = await raw.recv_type("command")
        assert sent_a["command"] == "work"
        assert sent_a["params"] == {"n": "A"}
        response_a = await first
        assert response_a.status_code == 504, response_a.text
        assert payload(response_a)["commandId"] == sent_a["commandId"]
        # Nothing is kept for a command nobody waits for any more (else a silent agent would
        # make the hub's memory grow with every command).
        assert sent_a["commandId"] not in server.hub.relay.reply_to

        # B: the agent answers A (late) first, then B.
        second = asyncio.create_task(
            command(
                ann, created.agent_id, {"command": "work", "parameters": {"n": "B"}, "timeout": 5}
            )
        )
        sent_b = await raw.recv_type("command")
        assert sent_b["params"] == {"n": "B"}
        assert sent_b["commandId"] != sent_a["commandId"]
        await raw.send(
            {
                "type": "command_result",
                "commandId": sent_a["commandId"],
                "success": True,
                "result": "answer to A",
            }
        )
        await raw.heartbeat()  # A's answer has been handled by now
        assert not second.done()
        await raw.send(
            {
                "type": "command_result",
                "commandId": sent_b["commandId"],
                "success": True,
                "result": "answer to B",
                "executionTime": 0.01,
            }
        )
        response_b = await asyncio.wait_for(second, 5)
        assert response_b.status_code == 200, response_b.text
        body_b = payload(response_b)
        assert body_b["commandId"] == sent_b["commandId"]
        assert body_b["result"] == "answer to B"
        assert body_b["agentResponse"] == {"success": True, "result": "answer to B", "error": None}

        # An answer to a command nobody sent is dropped too; the agent stays connected.
        await raw.send(
            {"type": "command_result", "commandId": "made-up", "success": True, "result": 1}
        )
        await raw.heartbeat()

    row_a = await command_row(server.hub, sent_a["commandId"])
    assert (row_a.status, row_a.result) == ("timeout", None)
    row_b = await command_row(server.hub, sent_b["commandId"])
    assert (row_b.status, row_b.result) == ("succeeded", "answer to B")


async def test_a_raw_agents_failure_answer_is_passed_on_as_it_sent_it(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw", commands=["work"])
        await ann.wait_status(created.agent_id, "online")
        pending = asyncio.create_task(command(ann, created.agent_id, {"command": "work"}))
        sent = await raw.recv_type("command")
        assert sent["params"] == {}
        await raw.send(
            {
                "type": "command_result",
                "commandId": sent["commandId"],
                "success": False,
                "error": "disk full",
            }
        )
        response = await asyncio.wait_for(pending, 5)
    assert response.status_code == 200, response.text
    body = payload(response)
    assert body["success"] is False
    assert body["agentResponse"] == {"success": False, "result": None, "error": "disk full"}
    row = await command_row(server.hub, body["commandId"])
    assert (row.status, row.error, row.via) == ("failed", "disk full", "rest")
