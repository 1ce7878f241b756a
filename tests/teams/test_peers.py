"""Agents working with their peers through the hub, as real SDK agents on a real hub (SQLite and
PostgreSQL): a delegated command and its answer, a subtask whose result flows back to the
parent's agent, a peer's prompt stream read in order, a peer's events followed, and cancelling a
parent task taking its subtasks (and theirs) along."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kai.protocol.agent import Close
from kai.sdk import Agent, SubtaskFailed
from tests.agents.support import HubServer, People, eventually
from tests.teams.support import (
    Crew,
    Seen,
    between,
    client_of,
    coordinator,
    decisions,
    read,
    refused,
    register,
    start_pair,
    until,
    worker,
)
from tests.work.support import command_rows

WORDS = [f"word-{i}" for i in range(200)]


async def test_a_command_to_a_peer_is_answered_and_a_delegated_one_comes_back(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        agent, boss_id, helper_id = await start_pair(
            kai, crew, server.ws_url, coordinator("boss"), worker("helper"), grant=["command"]
        )

        # From the agent itself, by the peer's name or id.
        assert await agent.peer("helper").command("add", {"a": 2, "b": 3}) == {
            "sum": 5,
            "by": "helper",
        }
        assert (await agent.peer(helper_id).command("add", {"a": 1, "b": 1}))["sum"] == 2
        # A person asks the boss, whose command handler asks the helper.
        answer = await kai.command(boss_id, "ask", {"peer": "helper", "params": {"a": 4, "b": 5}})
        assert answer["success"] is True, answer
        assert answer["result"] == {"answer": {"sum": 9, "by": "helper"}, "via": "boss"}

        # The peer's failure, and a command it does not take, come back as PeerError.
        failed = await refused(agent.peer("helper").command("fail"))
        assert (failed.error, failed.status) == ("helper cannot do that", None)
        unknown = await refused(agent.peer("helper").command("nope"))
        assert (unknown.error, unknown.status) == ("Agent does not handle the command 'nope'", 400)

    # The helper's commands are on its record, sent by the boss through the hub.
    rows = await command_rows(server.hub, helper_id)
    # (the undeclared one was refused before it was sent: no row)
    assert {(row.via, row.source_agent_id, row.user_id) for row in rows.values()} == {
        ("agent", boss_id, ann.user_id)
    }
    assert sorted(row.command for row in rows.values()) == ["add", "add", "add", "fail"]
    used = [
        d for d in await decisions(server.hub, "peer:") if d.resource == between(boss_id, helper_id)
    ]
    assert [(d.permission, d.granted, d.user_id) for d in used] == [
        ("peer:command", True, ann.user_id)
    ] * 5


async def test_a_subtasks_result_flows_back_to_the_parent_whose_status_lists_it(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    seen = Seen()
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper")
        boss_id, helper_id = ids["boss"], ids["helper"]
        team = await kai.create_team("helpers", [helper_id])
        await kai.grant(boss_id, ["task"], target_team_id=team["id"])
        await crew.start_all(server.ws_url, tokens, coordinator("boss", seen), worker("helper"))

        parent = await kai.create_task(boss_id, "delegate", {"peer": "helper", "params": {"n": 21}})
        done = await kai.wait_task(parent["taskId"], timeout=20)
        assert done["status"] == "succeeded", done
        subtask_id = done["result"]["subtask"]
        assert done["result"]["result"] == {"n": 42, "by": "helper"}
        assert (done["parentTaskId"], done["sourceAgentId"]) == (None, None)
        assert done["subtasks"] == [
            {
                "taskId": subtask_id,
                "agentId": helper_id,
                "taskType": "double",
                "status": "succeeded",
                "progress": 1.0,
            }
        ]
        child = await kai.task(subtask_id)
        assert child["agentId"] == helper_id
        assert (child["parentTaskId"], child["sourceAgentId"]) == (parent["taskId"], boss_id)
        assert (child["status"], child["result"], child["attempts"]) == (
            "succeeded",
            {"n": 42, "by": "helper"},
            1,
        )
        assert child["subtasks"] == []
        listed = await kai.tasks(helper_id)
        assert [t["taskId"] for t in listed["tasks"]] == [subtask_id]
        assert listed["tasks"][0]["parentTaskId"] == parent["taskId"]
        # The boss heard the subtask go by, in order, from its queueing to its success.
        heard = list(dict.fromkeys(seen.updates[subtask_id]))
        assert heard in (["queued", "running", "succeeded"], ["queued", "succeeded"]), heard

        # A failed subtask comes back as SubtaskFailed, with the peer's error.
        failing = await kai.create_task(
            boss_id, "delegate", {"peer": helper_id, "params": {"n": 1, "fail": True}}
        )
        done = await kai.wait_task(failing["taskId"], timeout=20)
        assert done["result"]["failed"] == "odd numbers only", done
        assert [s["status"] for s in done["subtasks"]] == ["failed"]

    used = [
        d for d in await decisions(server.hub, "peer:") if d.resource == between(boss_id, helper_id)
    ]
    assert [(d.permission, d.granted) for d in used] == [("peer:task", True)] * 2


async def test_a_peers_prompt_stream_is_read_in_order(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        agent, boss_id, _ = await start_pair(
            kai, crew, server.ws_url, Agent("boss"), worker("helper"), grant=["stream"]
        )

        assert await read(agent, "helper", " ".join(WORDS)) == WORDS
        # Two at once, each in its own order.
        first, second = " ".join(WORDS[:50]), " ".join(WORDS[50:120])
        both = await asyncio.gather(read(agent, "helper", first), read(agent, "helper", second))
        assert list(both) == [WORDS[:50], WORDS[50:120]]
        # The peer's failure ends the stream with PeerError.
        failed = await refused(read(agent, "helper", "fail"))
        assert failed.error.endswith(" failed: no words today"), failed.error
        # A peer that takes no prompts is refused up front.
        quiet = await kai.create_agent("quiet")
        await kai.grant(boss_id, ["stream"], target_agent_id=quiet["agentId"])
        await crew.start(Agent("quiet"), server.ws_url, quiet["agentToken"])
        refusal = await refused(read(agent, "quiet", "hello"))
        assert (refusal.error, refusal.status) == ("Agent does not take prompt streams", 400)


async def test_a_watch_grant_lets_an_agent_follow_a_peers_events(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        agent, boss_id, helper_id = await start_pair(
            kai, crew, server.ws_url, Agent("boss"), worker("helper")
        )
        events = agent.peer("helper").events()
        refusal = await refused(anext(events))
        assert refusal.error == "No grant lets this agent watch the events of that agent"

        await kai.grant(boss_id, ["watch"], target_agent_id=helper_id)
        events = agent.peer("helper").events()
        snapshot = await anext(events)
        assert (snapshot["type"], snapshot["snapshot"], snapshot["status"]) == (
            "status_update",
            True,
            "online",
        )
        assert snapshot["agentId"] == helper_id
        task = await kai.create_task(helper_id, "double", {"n": 2})
        statuses: list[str] = []
        async for event in events:
            assert event["seq"] == snapshot["seq"] + len(statuses) + 1, event
            if event["type"] == "task_update":
                assert event["taskId"] == task["taskId"]
                statuses.append(event["status"])
                if event["status"] == "succeeded":
                    break
            else:
                statuses.append(event["type"])
        assert [s for s in statuses if s in ("queued", "running", "succeeded")] == [
            "queued",
            "running",
            "running",
            "succeeded",
        ], statuses
        await events.aclose()  # type: ignore[attr-defined]


async def test_cancelling_a_parent_cancels_its_subtasks_all_the_way_down(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    seen = Seen()  # the handlers of all three agents write here
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "mid", "leaf")
        await kai.grant(ids["boss"], ["task"], target_agent_id=ids["mid"])
        await kai.grant(ids["mid"], ["task"], target_agent_id=ids["leaf"])
        await crew.start(coordinator("boss", seen), server.ws_url, tokens["boss"])
        # One slot: of the boss's two subtasks, one runs and one waits.
        await crew.start(worker("mid", seen, slots=1), server.ws_url, tokens["mid"])
        await crew.start(worker("leaf", seen), server.ws_url, tokens["leaf"])

        # boss: fan -> mid: hold (which holds through leaf: hold) and mid: hold (queued).
        parent = await kai.create_task(
            ids["boss"], "fan", {"holds": [["mid", "leaf"], ["mid", None]]}
        )
        parent_id = parent["taskId"]

        async def all_placed() -> dict[str, Any] | None:
            view = await kai.task(parent_id)
            statuses = [s["status"] for s in view["subtasks"]]
            if statuses != ["running", "queued"]:
                return None
            below = await kai.task(view["subtasks"][0]["taskId"])
            if [s["status"] for s in below["subtasks"]] != ["running"]:
                return None
            return view

        view = await eventually(
            all_placed, 10, what="a running and a queued subtask, and one below"
        )
        running_id, queued_id = (s["taskId"] for s in view["subtasks"])
        leaf_id = (await kai.task(running_id))["subtasks"][0]["taskId"]
        assert (await kai.task(leaf_id))["parentTaskId"] == running_id

        cancelled = await kai.cancel_task(parent_id)
        assert cancelled == {
            "success": True,
            "taskId": parent_id,
            "status": "cancelled",
            "previousStatus": "running",
        }
        for task_id in (running_id, queued_id, leaf_id):
            child = await kai.task(task_id)
            assert (child["status"], child["message"]) == (
                "cancelled",
                "Cancelled with its parent task",
            ), child
        queued = await kai.task(queued_id)
        assert queued["attempts"] == 0, "the queued subtask ran anyway"
        assert [s["status"] for s in (await kai.task(parent_id))["subtasks"]] == [
            "cancelled",
            "cancelled",
        ]

        # Every handler that was running stopped: the boss's, the mid's and the leaf's.
        async def all_stopped() -> bool:
            return sorted(seen.cancelled) == sorted([parent_id, running_id, leaf_id])

        await eventually(all_stopped, 10, what="the handlers cancelled")
        assert queued_id not in seen.started
        # The agents are free again: new work runs at once.
        again = await kai.create_task(ids["mid"], "double", {"n": 3})
        assert (await kai.wait_task(again["taskId"], timeout=10))["result"]["n"] == 6
        # Cancelling an ended task is refused, and cancels nothing more.
        assert (await kai.task(again["taskId"]))["status"] == "succeeded"


async def test_how_a_command_to_a_peer_can_fail(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper", "away")
        team = await kai.create_team("all", [ids["helper"], ids["away"]])
        await kai.grant(ids["boss"], ["command"], target_team_id=team["id"])
        agent, _ = await crew.start_all(server.ws_url, tokens, Agent("boss"), worker("helper"))

        late = await refused(agent.peer("helper").command("wait", timeout=0.3))
        assert (late.error, late.status) == ("The agent did not answer within 0.3 s", 504)
        offline = await refused(agent.peer("away").command("add", {"a": 1, "b": 1}))
        assert (offline.error, offline.status) == ("Agent is not connected", 409)
        unknown = await refused(agent.peer("nobody").command("add"))
        assert (unknown.error, unknown.status) == ("Unknown peer", None)


async def test_a_subtask_cancelled_or_ended_while_its_creator_was_away_still_reaches_it(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    seen = Seen()
    async with client_of(ann) as kai:
        agent, boss_id, helper_id = await start_pair(
            kai, crew, server.ws_url, Agent("boss"), worker("helper", seen), grant=["task"]
        )

        # A person cancels a subtask: its creator hears it as SubtaskFailed.
        handle = await agent.peer("helper").submit("hold")
        assert (handle.peer_id, handle.replayed) == (helper_id, False)

        await until(lambda: seen.started == [handle.task_id], what="the helper holding it")
        await kai.cancel_task(handle.task_id)
        with pytest.raises(SubtaskFailed) as failed:
            await asyncio.wait_for(handle.result(), 10)
        assert failed.value.update["status"] == "cancelled"
        assert str(failed.value) == f"subtask {handle.task_id} cancelled: "
        await until(lambda: seen.cancelled == [handle.task_id], what="the helper stopped")

        # A subtask that ends while its creator is away: it learns the result once back.
        handle = await agent.peer("helper").submit("hold")
        await until(lambda: len(seen.started) == 2, what="the second one held")
        live = server.hub.live.get(boss_id)
        assert live is not None
        await live.close(Close.GOING_AWAY, "Going away for the test")
        await until(lambda: not agent.connected.is_set(), what="the boss away")
        seen.release.set()
        assert (await kai.wait_task(handle.task_id, timeout=10))["status"] == "succeeded"
        assert await asyncio.wait_for(handle.result(), 10) == {"released": "helper"}
        assert agent.connected.is_set()
        # The creator may ask after it, or cancel it, no more.
        refusal = await refused(handle.cancel())
        assert (refusal.error, refusal.status) == ("Task already succeeded", 409)
