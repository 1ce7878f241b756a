"""Coordination across two hub nodes sharing PostgreSQL and Redis: the coordinator holds its
socket on one node, its workers on the other, and people call either. Commands, subtasks (and
their cancelling), prompt streams and the team channel all cross between the nodes."""

from __future__ import annotations

import asyncio

import pytest

from kai.sdk.client import KaiClient
from tests.agents.support import People, eventually
from tests.realtime.client_support import Hubs
from tests.teams.support import (
    Crew,
    Seen,
    client_of,
    coordinator,
    following,
    online_everywhere,
    read,
    register,
    until,
    watch_team,
    worker,
)

FAST = {"agent_heartbeat_interval": 0.2, "agent_heartbeat_timeout": 1.0}


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_coordinator_and_its_workers_on_two_nodes_work_together(
    hubs: Hubs, crew: Crew
) -> None:
    near, far = await hubs.pair(**FAST)
    ann = await People(near).join("ann@example.com")
    seen = Seen()
    async with client_of(ann) as kai, KaiClient(far.base_url, token=ann.token) as far_kai:
        ids, tokens = await register(kai, "boss", "worker-a", "worker-b")
        workers = await kai.create_team("workers", [ids["worker-a"], ids["worker-b"]])
        await kai.grant(ids["boss"], ["command", "task", "stream"], target_team_id=workers["id"])
        everyone = await far_kai.create_team("everyone", list(ids.values()))
        boss = await crew.start(coordinator("boss", seen), near.ws_url, tokens["boss"])
        worker_a = await crew.start(worker("worker-a", seen), far.ws_url, tokens["worker-a"])
        await crew.start(worker("worker-b"), far.ws_url, tokens["worker-b"])
        await online_everywhere([near, far], *ids.values())
        assert near.hub.live.get(ids["boss"]) is not None
        assert far.hub.live.get(ids["worker-a"]) is not None

        # A command from the boss's node to a worker on the other, and back.
        assert await boss.peer("worker-a").command("add", {"a": 20, "b": 22}) == {
            "sum": 42,
            "by": "worker-a",
        }
        # A person on the workers' node asks the boss, who asks a worker.
        answer = await far_kai.command(
            ids["boss"], "ask", {"peer": "worker-b", "params": {"a": 1, "b": 2}}
        )
        assert answer["result"] == {"answer": {"sum": 3, "by": "worker-b"}, "via": "boss"}

        # Subtasks: queued on the boss's node, run on the other, their results sent back.
        parents = [
            await far_kai.create_task(ids["boss"], "delegate", {"peer": name, "params": {"n": n}})
            for n, name in enumerate(("worker-a", "worker-b", "worker-a", "worker-b"), start=1)
        ]
        done = [await kai.wait_task(p["taskId"], timeout=20) for p in parents]
        assert [d["status"] for d in done] == ["succeeded"] * 4, done
        assert [d["result"]["result"] for d in done] == [
            {"n": 2, "by": "worker-a"},
            {"n": 4, "by": "worker-b"},
            {"n": 6, "by": "worker-a"},
            {"n": 8, "by": "worker-b"},
        ]
        for status in done:
            (child,) = status["subtasks"]
            assert child["status"] == "succeeded"
            on_far = await far_kai.task(child["taskId"])
            assert (on_far["parentTaskId"], on_far["sourceAgentId"]) == (
                status["taskId"],
                ids["boss"],
            )
            assert seen.updates[child["taskId"]][-1] == "succeeded"

        # A prompt stream across the nodes, in order.
        words = [f"w{i}" for i in range(100)]
        assert await read(boss, "worker-b", " ".join(words)) == words

        # The team channel: published on one node, read by an agent and a person on the other.
        async with (
            following(boss, everyone["id"]) as follower,
            watch_team(near, everyone["id"], ann.token) as person,
        ):
            snapshot = await person.recv()
            sent = await asyncio.gather(
                *(worker_a.team(everyone["id"]).publish(i) for i in range(20))
            )
            got = await follower.has(20)
            watched = await person.take(20)
            head = snapshot["seq"]
            assert sorted(s for s in sent if s is not None) == list(range(head + 1, head + 21))
            assert [m["seq"] for m in got] == list(range(head + 1, head + 21))
            assert [m["data"] for m in got] == list(range(20))
            assert [(m["seq"], m["data"]) for m in watched] == [(m["seq"], m["data"]) for m in got]


@pytest.mark.parametrize("mode", ["redis"])
async def test_cancelling_a_parent_stops_its_handler_and_its_subtask_on_the_other_node(
    hubs: Hubs, crew: Crew
) -> None:
    near, far = await hubs.pair(**FAST)
    ann = await People(near).join("ann@example.com")
    seen = Seen()
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "worker")
        boss_id, helper_id = ids["boss"], ids["worker"]
        await kai.grant(boss_id, ["task"], target_agent_id=helper_id)
        await crew.start(coordinator("boss", seen), near.ws_url, tokens["boss"])
        await crew.start(worker("worker", seen), far.ws_url, tokens["worker"])
        await online_everywhere([near, far], boss_id, helper_id)

        parent = await kai.create_task(boss_id, "fan", {"holds": [["worker", None]]})
        parent_id = parent["taskId"]

        async def holding() -> str | None:
            subtasks = (await kai.task(parent_id))["subtasks"]
            running = [s["taskId"] for s in subtasks if s["status"] == "running"]
            return running[0] if running else None

        child_id = await eventually(holding, 10, what="the subtask running on the far node")
        assert (await kai.cancel_task(parent_id))["previousStatus"] == "running"
        child = await kai.task(child_id)
        assert (child["status"], child["message"]) == (
            "cancelled",
            "Cancelled with its parent task",
        )
        # Both handlers stop: the worker's on the far node, and the coordinator's here, which
        # is cancelled with its task rather than woken by its subtask's end.
        await until(lambda: child_id in seen.cancelled, what="the worker's handler cancelled")
        await until(
            lambda: parent_id in seen.cancelled + seen.failed, what="the coordinator's handler"
        )
        assert parent_id not in seen.failed, (
            "the coordinator heard its subtask was cancelled before its own task was"
        )
