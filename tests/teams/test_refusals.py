"""What the hub refuses an agent: anything no grant allows (said clearly, and audited), any
action but the granted ones, a grant once revoked or a team left, and any agent of another
owner, by id or by name, whatever a grant says. Also the protocol's own checks: a subtask's
parent must be a task the agent is running, and an agent asks after its own tasks only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kai.db import new_id, utcnow
from kai.sdk import Agent, PeerError
from kai.sdk.client import KaiApiError
from kai.teams.models import Grant, Team, TeamMember
from tests.agents.support import HubServer, People, RawAgent, agent_socket
from tests.teams.support import (
    Crew,
    between,
    client_of,
    decisions,
    read,
    refused,
    register,
    start_pair,
    worker,
)
from tests.work.support import command_rows, kept_alive
from tests.work.test_metrics import scrape, value

NO_COMMAND = "No grant lets this agent send commands to that agent"
NO_TASK = "No grant lets this agent create tasks for that agent"
NO_STREAM = "No grant lets this agent open prompt streams on that agent"
NO_WATCH = "No grant lets this agent watch the events of that agent"
UNKNOWN = "Unknown peer"


async def attempts(agent: Agent, peer: str) -> dict[str, str]:
    """Each action tried on ``peer``: what the hub answered (``ok`` if it did not refuse)."""
    answers: dict[str, str] = {}
    tries: dict[str, Any] = {
        "command": agent.peer(peer).command("add", {"a": 1, "b": 1}),
        "task": agent.peer(peer).task("double", {"n": 1}),
        "stream": read(agent, peer, "one two"),
        "watch": anext(agent.peer(peer).events()),
    }
    for action, work in tries.items():
        try:
            await work
            answers[action] = "ok"
        except Exception as exc:
            answers[action] = str(exc)
    return answers


async def test_a_peer_without_a_grant_is_refused_clearly_and_audited(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        agent, boss_id, helper_id = await start_pair(
            kai, crew, server.ws_url, Agent("boss"), worker("helper")
        )
        before = await scrape(server)

        error = await refused(agent.peer("helper").command("add", {"a": 1, "b": 2}))
        assert (error.error, error.status, str(error)) == (NO_COMMAND, None, NO_COMMAND)
        assert await attempts(agent, helper_id) == {
            "command": NO_COMMAND,
            "task": NO_TASK,
            "stream": NO_STREAM,
            "watch": NO_WATCH,
        }
        # Nothing reached the helper.
        assert await command_rows(server.hub, helper_id) == {}
        assert (await kai.tasks(helper_id))["total"] == 0
        # The refusals are counted.
        after = await scrape(server)
        metric = "kai_peer_requests_total"
        grown = {
            kind: value(after, metric, kind=kind, outcome="refused")
            - value(before, metric, kind=kind, outcome="refused")
            for kind in ("peer_command", "peer_task", "peer_stream", "subscribe")
        }
        assert grown == {"peer_command": 2, "peer_task": 1, "peer_stream": 1, "subscribe": 1}

    # Each refusal is in the audit log, as an admin reads it.
    admin = await people.admin()
    response = await admin.call(
        "GET", "/api/audit", params={"permission": "peer:command", "decision": "denied"}
    )
    assert response.status_code == 200, response.text
    rows = response.json()["events"]
    assert [(r["userId"], r["granted"], r["resource"], r["kind"]) for r in rows] == [
        (ann.user_id, False, between(boss_id, helper_id), "permission")
    ] * 2
    denied = {(d.permission, d.granted) for d in await decisions(server.hub, "peer:")}
    assert denied == {
        (f"peer:{action}", False) for action in ("command", "task", "stream", "watch")
    }


async def test_a_grant_allows_its_actions_only_and_stops_when_revoked(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper", "other")
        boss_id, helper_id = ids["boss"], ids["helper"]
        agent, _, _ = await crew.start_all(
            server.ws_url, tokens, Agent("boss"), worker("helper"), worker("other")
        )

        # A grant for tasks lets the boss queue tasks, and do nothing else.
        tasks = await kai.grant(boss_id, ["task"], target_agent_id=helper_id)
        assert await attempts(agent, "helper") == {
            "command": NO_COMMAND,
            "task": "ok",
            "stream": NO_STREAM,
            "watch": NO_WATCH,
        }
        # ...on that agent only.
        assert (await attempts(agent, "other"))["task"] == NO_TASK

        commands = await kai.grant(boss_id, ["command", "stream"], target_agent_id=helper_id)
        assert await attempts(agent, "helper") == {
            "command": "ok",
            "task": "ok",
            "stream": "ok",
            "watch": NO_WATCH,
        }
        await kai.revoke(boss_id, commands["id"])
        assert await attempts(agent, "helper") == {
            "command": NO_COMMAND,
            "task": "ok",
            "stream": NO_STREAM,
            "watch": NO_WATCH,
        }
        await kai.revoke(boss_id, tasks["id"])
        assert (await attempts(agent, "helper"))["task"] == NO_TASK

        # Through a team: while the helper is a member, and no longer.
        team = await kai.create_team("helpers", [helper_id])
        await kai.grant(boss_id, ["command"], target_team_id=team["id"])
        assert await agent.peer("helper").command("add", {"a": 1, "b": 2}) == {
            "sum": 3,
            "by": "helper",
        }
        assert (await attempts(agent, "other"))["command"] == NO_COMMAND
        await kai.update_team(team["id"], agentIds=[ids["other"]])
        assert (await attempts(agent, "helper"))["command"] == NO_COMMAND
        assert (await attempts(agent, "other"))["command"] == "ok"
        await kai.delete_team(team["id"])
        assert (await attempts(agent, "other"))["command"] == NO_COMMAND

    # Every use was checked: granted and refused alike are in the log, in order.
    used = [
        (d.permission, d.granted)
        for d in await decisions(server.hub, "peer:command")
        if d.resource == between(boss_id, helper_id)
    ]
    assert used == [
        ("peer:command", False),
        ("peer:command", True),
        ("peer:command", False),
        ("peer:command", False),
        ("peer:command", True),
        ("peer:command", False),
    ]


async def test_agents_of_another_owner_are_unreachable_whatever_a_grant_says(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    async with client_of(ann) as kai, client_of(bob) as bobs:
        ids, tokens = await register(kai, "boss", "twin")
        bobs_ids, bobs_tokens = await register(bobs, "stranger", "twin")
        boss_id, stranger_id = ids["boss"], bobs_ids["stranger"]
        agent = await crew.start(Agent("boss"), server.ws_url, tokens["boss"])
        await crew.start(worker("ann's twin"), server.ws_url, tokens["twin"])
        bobs_agent = await crew.start(worker("bob's"), server.ws_url, bobs_tokens["stranger"])
        await crew.start(worker("bob's twin"), server.ws_url, bobs_tokens["twin"])

        # No grant can be made across owners, whoever asks.
        with pytest.raises(KaiApiError) as made:
            await kai.grant(boss_id, ["command"], target_agent_id=stranger_id)
        assert (made.value.status, made.value.detail) == (404, "Agent not found")
        bobs_team = await bobs.create_team("bob's team", [stranger_id])
        with pytest.raises(KaiApiError) as made:
            await kai.grant(boss_id, ["command"], target_team_id=bobs_team["id"])
        assert (made.value.status, made.value.detail) == (404, "Team not found")
        with pytest.raises(KaiApiError) as made:
            await kai.create_team("mixed", [boss_id, stranger_id])
        assert (made.value.status, made.value.detail) == (404, "Agent not found")

        # Even grants written into the database by hand, past the API, reach nothing.
        async with server.hub.db.session() as session:
            for target in ({"target_agent_id": stranger_id}, {"target_team_id": bobs_team["id"]}):
                session.add(
                    Grant(
                        id=new_id(),
                        owner_id=ann.user_id,
                        agent_id=boss_id,
                        actions=["command", "task", "stream", "watch"],
                        created_at=utcnow(),
                        **target,
                    )
                )
        every = dict.fromkeys(("command", "task", "stream", "watch"), UNKNOWN)
        assert await attempts(agent, stranger_id) == every
        assert await attempts(agent, "stranger") == every
        # By name, the boss finds its owner's twin only, never the other owner's.
        await kai.grant(boss_id, ["command"], target_agent_id=ids["twin"])
        assert await agent.peer("twin").command("add", {"a": 1, "b": 1}) == {
            "sum": 2,
            "by": "ann's twin",
        }
        # Nor does Bob's agent reach Ann's, the other way round.
        assert await attempts(bobs_agent, boss_id) == every

    assert await command_rows(server.hub, stranger_id) == {}
    assert await command_rows(server.hub, bobs_ids["twin"]) == {}
    refusals = [
        (d.permission, d.granted, d.user_id)
        for d in await decisions(server.hub, "peer:")
        if d.resource == between(boss_id, stranger_id)
    ]
    # By id the attempt is audited, refused; by name the other owner's agent is never found.
    assert refusals == [
        (f"peer:{action}", False, ann.user_id) for action in ("command", "task", "stream", "watch")
    ]


async def test_a_team_of_another_owner_is_no_way_in_either(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    async with client_of(ann) as kai, client_of(bob) as bobs:
        boss = await kai.create_agent("boss")
        stranger = await bobs.create_agent("stranger")
        agent = await crew.start(Agent("boss"), server.ws_url, boss["agentToken"])
        await crew.start(worker("bob's"), server.ws_url, stranger["agentToken"])
        # Bob's team with Ann's agent in it, written by hand: still not Ann's agent's team.
        team_id = new_id()
        async with server.hub.db.session() as session:
            session.add(
                Team(
                    id=team_id,
                    owner_id=bob.user_id,
                    name="sneaky",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            await session.flush()
            session.add_all(
                [
                    TeamMember(team_id=team_id, agent_id=boss["agentId"]),
                    TeamMember(team_id=team_id, agent_id=stranger["agentId"]),
                ]
            )
        not_member = "This agent is not a member of that team"
        assert (await refused(agent.team(team_id).publish({"x": 1}))).error == not_member
        assert (await refused(anext(agent.team(team_id).subscribe()))).error == not_member


async def test_a_request_the_hub_cannot_take_is_answered_not_left_waiting(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper")
        team = await kai.create_team("crew", [ids["boss"], ids["helper"]])
        await kai.grant(ids["boss"], ["command", "task"], target_agent_id=ids["helper"])
        agent, _ = await crew.start_all(server.ws_url, tokens, Agent("boss"), worker("helper"))

        async def answer(work: Any) -> str:
            try:
                await asyncio.wait_for(work, 3)
            except TimeoutError:
                return "left waiting"
            except PeerError as error:
                return f"refused ({error.status})"
            return "done"

        # Each breaks a limit of the protocol (timeout at most 300 s, a topic of one character
        # or more, keys of at most 200).
        answers = await asyncio.gather(
            answer(agent.peer("helper").command("add", {"a": 1, "b": 1}, timeout=301)),
            answer(agent.team(team["id"]).publish("hello", topic="")),
            answer(agent.peer("helper").task("double", {"n": 1}, idempotency_key="k" * 201)),
        )
        assert all(a.startswith("refused") for a in answers), answers
        # The connection goes on.
        assert await agent.peer("helper").command("add", {"a": 1, "b": 1}) == {
            "sum": 2,
            "by": "helper",
        }


async def reply(agent: RawAgent, request_id: str) -> dict[str, Any]:
    """The hub's ``peer_reply`` to ``request_id`` (other messages are skipped)."""
    while True:
        message = await agent.recv()
        if message["type"] == "peer_reply" and message.get("requestId") == request_id:
            return message


async def test_a_subtasks_parent_is_a_task_its_agent_is_running(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper")
        boss_id, helper_id = ids["boss"], ids["helper"]
        await kai.grant(boss_id, ["task"], target_agent_id=helper_id)
        await crew.start(worker("helper"), server.ws_url, tokens["helper"])
        someone_elses = (await kai.create_task(helper_id, "double", {"n": 1}))["taskId"]
        await kai.wait_task(someone_elses)

        async with agent_socket(server.ws_url, tokens["boss"]) as raw, kept_alive(raw):
            await raw.hello("boss", taskTypes=["work"], maxConcurrency=1)
            own = (await kai.create_task(boss_id, "work", {}))["taskId"]
            pushed = await raw.recv_type("task")
            assert pushed["taskId"] == own

            def subtask(request_id: str, parent: str) -> dict[str, Any]:
                return {
                    "type": "peer_task",
                    "requestId": request_id,
                    "peer": "helper",
                    "taskType": "double",
                    "params": {"n": 5},
                    "parentTaskId": parent,
                }

            not_running = "parentTaskId must be a task this agent is running"
            for request_id, parent in (("r1", someone_elses), ("r2", "no-such-task")):
                await raw.send(subtask(request_id, parent))
                answer = await reply(raw, request_id)
                assert (answer["ok"], answer["error"]) == (False, not_running), answer
            await raw.send(subtask("r3", own))
            answer = await reply(raw, "r3")
            assert answer["ok"] is True, answer
            assert (answer["parentTaskId"], answer["peerId"], answer["replayed"]) == (
                own,
                helper_id,
                False,
            )
            child = answer["taskId"]

            # The agent asks after, and cancels, only tasks it created.
            for kind, request_id in (("peer_task_status", "r4"), ("peer_task_cancel", "r5")):
                await raw.send({"type": kind, "requestId": request_id, "taskId": someone_elses})
                answer = await reply(raw, request_id)
                assert (answer["ok"], answer["error"], answer["status"]) == (
                    False,
                    "Task not found",
                    404,
                ), answer
            await raw.send({"type": "peer_task_status", "requestId": "r6", "taskId": child})
            answer = await reply(raw, "r6")
            assert (answer["ok"], answer["taskId"], answer["parentTaskId"]) == (True, child, own)

            # Once the task has ended it can have no more subtasks.
            await raw.send({"type": "task_result", "taskId": own, "success": True, "attempt": 1})
            await kai.wait_task(own, timeout=10)
            await raw.send(subtask("r7", own))
            answer = await reply(raw, "r7")
            assert (answer["ok"], answer["error"]) == (False, not_running)

            # A feed is a team's or an agent's, nothing else.
            await raw.send({"type": "subscribe", "requestId": "r8", "feed": "nothing:at-all"})
            answer = await reply(raw, "r8")
            assert (answer["ok"], answer["status"]) == (False, 400), answer
            assert answer["error"] == "feed must be team:<teamId> or agent:<peer id or name>"

        status = await kai.task(own)
        assert [s["taskId"] for s in status["subtasks"]] == [child]
