"""Durable tasks: ``POST /api/agents/{agentId}/task`` and the task routes, with raw agents
whose every message the tests see, the demo agent as a real process, and two nodes on Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import ServerStarter
from tests.agents.processes import Launcher
from tests.agents.support import HubServer, People, agent_socket
from tests.clock import FakeClock
from tests.helpers import assert_problem
from tests.realtime.client_support import Hubs, watch
from tests.work.support import DEMO, kept_alive, payload
from tests.work.task_support import (
    CREATED_FIELDS,
    ENDED,
    STATUS_FIELDS,
    answer,
    cancel,
    create,
    listed,
    messages,
    progress,
    queued,
    reaches,
    status_of,
    task_row,
    updates,
    when,
)

LEASE = 1.0  # seconds: the lease of the tests where leases run out
WORK = ["work"]


async def test_a_created_task_is_stored_before_the_answer_and_read_back_in_full(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("offline")
    params = {"text": "hello", "n": [1, 2, {"deep": None}]}

    response = await create(
        ann,
        created.agent_id,
        {"taskType": "summarize", "parameters": params, "priority": "high", "maxAttempts": 5},
    )
    # The row is there the moment the answer is: it was committed first.
    assert response.status_code == 201, response.text
    body = payload(response)
    row = await task_row(server.hub, body["taskId"])
    assert set(body) == CREATED_FIELDS
    assert "Idempotent-Replayed" not in response.headers
    assert (body["success"], body["status"], body["queuePosition"]) == (True, "queued", 1)
    assert body["estimatedStartTime"] is not None  # first in the queue: it could start now
    assert (row.agent_id, row.user_id, row.task_type) == (
        created.agent_id,
        ann.user_id,
        "summarize",
    )
    assert (row.parameters, row.priority, row.status) == (params, 2, "queued")
    assert (row.attempts, row.max_attempts, row.progress) == (0, 5, 0.0)
    assert row.created_at == when(body["createdAt"])

    view = await status_of(ann, body["taskId"])
    assert set(view) == STATUS_FIELDS
    assert view == {
        "taskId": body["taskId"],
        "agentId": created.agent_id,
        "taskType": "summarize",
        "status": "queued",
        "priority": "high",
        "progress": 0.0,
        "message": None,
        "result": None,
        "error": None,
        "attempts": 0,
        "maxAttempts": 5,
        "createdAt": body["createdAt"],
        "startedAt": None,
        "completedAt": None,
        "queuePosition": 1,
        "estimatedStartTime": view["estimatedStartTime"],
        "estimatedCompletion": None,  # nothing ran yet: no duration to go by
        "parentTaskId": None,  # created by a person: no parent, no source agent
        "sourceAgentId": None,
        "subtasks": [],
    }
    assert view["estimatedStartTime"] is not None

    # Parameters and priority have defaults, and so has maxAttempts (the hub's setting).
    plain = await status_of(ann, await queued(ann, created.agent_id, "summarize"))
    assert (plain["priority"], plain["maxAttempts"]) == ("medium", 3)
    assert (plain["queuePosition"], plain["estimatedStartTime"]) == (2, None)

    bad_bodies: list[Any] = [
        {},
        {"taskType": ""},
        {"taskType": "x" * 201},
        {"taskType": 5},
        {"taskType": "work", "parameters": [1]},
        {"taskType": "work", "priority": "urgent"},
        {"taskType": "work", "priority": 3},
        {"taskType": "work", "idempotencyKey": ""},
        {"taskType": "work", "maxAttempts": 0},
        {"taskType": "work", "maxAttempts": 101},
        {"taskType": "work", "unknown": True},
        "work",
    ]
    for bad in bad_bodies:
        response = await create(ann, created.agent_id, bad)
        assert response.status_code == 422, (bad, response.text)
    assert payload(await listed(ann, created.agent_id))["total"] == 2


async def test_queue_positions_count_higher_priorities_then_older_tasks(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("offline")
    answers = []
    for priority in ("low", "medium", "high", "medium", "critical", "high"):
        response = await create(ann, created.agent_id, {"taskType": "work", "priority": priority})
        assert response.status_code == 201, response.text
        answers.append(payload(response))
    # Where each one stood when it was created.
    assert [a["queuePosition"] for a in answers] == [1, 1, 1, 3, 1, 3]
    low, medium, high, medium_2, critical, high_2 = [a["taskId"] for a in answers]

    expected = {critical: 1, high: 2, high_2: 3, medium: 4, medium_2: 5, low: 6}
    views = {task_id: await status_of(ann, task_id) for task_id in expected}
    assert {task_id: view["queuePosition"] for task_id, view in views.items()} == expected
    # Only the first could start now; when the others start depends on durations not yet known.
    assert [views[t]["estimatedStartTime"] is not None for t in expected] == [True] + [False] * 5

    # A cancelled task leaves the queue: those behind it move up.
    assert (await cancel(ann, high)).status_code == 200
    assert (await status_of(ann, low))["queuePosition"] == 5
    assert (await status_of(ann, high_2))["queuePosition"] == 2
    assert (await status_of(ann, high))["queuePosition"] is None


async def test_an_agent_that_connects_gets_its_queue_by_priority_then_age_one_at_a_time(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    hub = server.hub
    # Queued while the agent has never been connected (so any task type is taken).
    order = ["low", "medium", "critical", "medium", "high", "critical"]
    ids = [
        await queued(ann, created.agent_id, "work", priority=p, parameters={"i": i})
        for i, p in enumerate(order)
    ]
    expected = [ids[2], ids[5], ids[4], ids[1], ids[3], ids[0]]

    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw", taskTypes=WORK, maxConcurrency=1)
        received = []
        for number, task_id in enumerate(expected):
            sent = await raw.recv_type("task")
            received.append(sent["taskId"])
            i = ids.index(sent["taskId"])
            assert sent == {
                "type": "task",
                "taskId": sent["taskId"],
                "taskType": "work",
                "params": {"i": i},
                "attempt": 1,
                "priority": order[i],
            }
            # One at a time: nothing else leaves the queue while this one runs.
            assert await hub.tasks.dispatch(created.agent_id) == 0
            view = await status_of(ann, sent["taskId"])
            assert (view["status"], view["attempts"], view["queuePosition"]) == ("running", 1, None)
            assert view["startedAt"] is not None
            waiting = expected[number + 1 :]
            if waiting:
                assert (await status_of(ann, waiting[0]))["queuePosition"] == 1
            if number == 1:
                # One task has finished: its duration now gives estimates.
                assert view["estimatedCompletion"] is not None
                behind = await status_of(ann, waiting[0])
                start, end = behind["estimatedStartTime"], behind["estimatedCompletion"]
                assert start is not None
                assert end is not None
                assert when(end) > when(start)
            await answer(raw, sent, {"done": task_id})
        assert received == expected

        last = await reaches(ann, expected[-1], "succeeded")
        assert (last["result"], last["progress"], last["attempts"]) == ({"done": ids[0]}, 1.0, 1)
        assert last["completedAt"] is not None
        assert when(last["completedAt"]) >= when(last["startedAt"])


async def test_an_agent_gets_as_many_tasks_as_its_max_concurrency_until_it_answers(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    hub = server.hub
    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("raw", taskTypes=WORK, maxConcurrency=2)
        await ann.wait_status(created.agent_id, "online")
        ids = [await queued(ann, created.agent_id, parameters={"i": i}) for i in range(4)]

        first = await raw.recv_type("task")
        second = await raw.recv_type("task")
        assert [first["taskId"], second["taskId"]] == ids[:2]
        assert await hub.tasks.dispatch(created.agent_id) == 0
        assert [(await task_row(hub, t)).status for t in ids] == [
            "running",
            "running",
            "queued",
            "queued",
        ]

        # A failure frees a slot as a success does.
        await answer(raw, second, error="no luck")
        third = await raw.recv_type("task")
        assert third["taskId"] == ids[2]
        assert await hub.tasks.dispatch(created.agent_id) == 0
        assert (await task_row(hub, ids[3])).status == "queued"
        failed = await status_of(ann, ids[1])
        assert (failed["status"], failed["error"], failed["result"]) == ("failed", "no luck", None)

        await answer(raw, first, "one")
        assert (await raw.recv_type("task"))["taskId"] == ids[3]


async def test_progress_and_results_are_stored_and_published_as_task_updates(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    async with (
        watch(server, created.agent_id, ann.token) as watcher,
        agent_socket(server.ws_url, created.token) as raw,
        kept_alive(raw),
    ):
        await raw.hello("raw", taskTypes=WORK, maxConcurrency=2)
        await ann.wait_status(created.agent_id, "online")
        good = await queued(ann, created.agent_id, parameters={"to": 2})
        bad = await queued(ann, created.agent_id)
        sent_good = await raw.recv_type("task")
        sent_bad = await raw.recv_type("task")
        assert [sent_good["taskId"], sent_bad["taskId"]] == [good, bad]

        await progress(raw, good, 0.5, "half way")
        seen = await reaches(ann, good, "running", progress=0.5)
        assert (seen["message"], seen["attempts"]) == ("half way", 1)
        await progress(raw, bad, 0.25, "a quarter")
        await answer(raw, sent_good, {"counted": 2})
        await answer(raw, sent_bad, error="out of paper")

        events = await updates(watcher, {good: "succeeded", bad: "failed"})
        base = {"type": "task_update", "taskType": "work"}
        assert events[good] == [
            {**base, "taskId": good, "status": "queued", "progress": 0.0, "attempt": 0},
            {**base, "taskId": good, "status": "running", "progress": 0.0, "attempt": 1},
            {
                **base,
                "taskId": good,
                "status": "running",
                "progress": 0.5,
                "attempt": 1,
                "message": "half way",
            },
            {
                **base,
                "taskId": good,
                "status": "succeeded",
                "progress": 1.0,
                "attempt": 1,
                "message": "half way",
                "result": {"counted": 2},
            },
        ]
        assert events[bad][-1] == {
            **base,
            "taskId": bad,
            "status": "failed",
            "progress": 0.25,
            "attempt": 1,
            "message": "a quarter",
            "error": "out of paper",
        }

    done = await status_of(ann, good)
    assert (done["status"], done["progress"], done["result"]) == ("succeeded", 1.0, {"counted": 2})
    failed = await status_of(ann, bad)
    assert (failed["status"], failed["progress"], failed["error"]) == (
        "failed",
        0.25,
        "out of paper",
    )
    assert failed["result"] is None


async def test_a_retried_create_with_the_same_idempotency_key_is_the_same_task(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("offline")
    other = await ann.create_agent("other")
    body = {
        "taskType": "work",
        "parameters": {"a": 1, "b": [2, 3]},
        "priority": "high",
        "idempotencyKey": "order-17",
    }
    first = await create(ann, created.agent_id, body)
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    task_id = payload(first)["taskId"]

    again = await create(ann, created.agent_id, {**body, "parameters": {"b": [2, 3], "a": 1}})
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same answer, but for when it could start: that is estimated anew.
    assert {**payload(again), "estimatedStartTime": None} == {
        **payload(first),
        "estimatedStartTime": None,
    }

    # The same key with anything else different is a conflict naming the task.
    for changed in (
        {"parameters": {"a": 2, "b": [2, 3]}},
        {"priority": "low"},
        {"taskType": "other"},
        {"maxAttempts": 7},
    ):
        response = await create(ann, created.agent_id, {**body, **changed})
        assert_problem(response, 409)
        assert payload(response)["taskId"] == task_id, changed
    # Keys are per agent.
    elsewhere = await create(ann, other.agent_id, body)
    assert elsewhere.status_code == 201, elsewhere.text
    assert payload(elsewhere)["taskId"] != task_id

    # A replay answers with the task as it is now.
    assert (await cancel(ann, task_id)).status_code == 200
    late = await create(ann, created.agent_id, body)
    assert late.headers["Idempotent-Replayed"] == "true"
    assert (payload(late)["taskId"], payload(late)["status"]) == (task_id, "cancelled")
    assert payload(late)["queuePosition"] is None

    # Retries racing each other make one task.
    racing = {"taskType": "work", "idempotencyKey": "race"}
    responses = await asyncio.gather(*(create(ann, created.agent_id, racing) for _ in range(8)))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert len({payload(r)["taskId"] for r in responses}) == 1
    fresh = [r for r in responses if "Idempotent-Replayed" not in r.headers]
    assert len(fresh) == 1
    assert payload(await listed(ann, created.agent_id))["total"] == 2


async def test_undeclared_task_types_are_refused_and_tasks_wait_for_the_agent_to_return(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    # Before its first hello nobody knows what it takes: the task waits for it.
    # Once it says it takes other types, the task fails saying so, and is never sent.
    early = await queued(ann, created.agent_id, "dance")
    fits = await queued(ann, created.agent_id, "work")
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello("raw", taskTypes=["work", "sort"])
        sent = await raw.recv_type("task")
        assert (sent["taskId"], sent["taskType"]) == (fits, "work")
        failed = await reaches(ann, early, "failed")
        assert failed["error"] == "The agent does not take tasks of type 'dance'"
        assert failed["attempts"] == 0
        await answer(raw, sent, "done")
        await reaches(ann, fits, "succeeded")

    # Its declared types stay known while it is away.
    await ann.wait_status(created.agent_id, "offline")
    response = await create(ann, created.agent_id, {"taskType": "dance"})
    assert_problem(response, 400)
    refused = payload(response)
    assert refused["taskTypes"] == ["sort", "work"]
    assert "dance" in refused["detail"]
    later = await queued(ann, created.agent_id, "sort", parameters={"keys": [3, 1, 2]})
    assert (await status_of(ann, later))["status"] == "queued"

    # Back online, it gets what was queued while it was away.
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello("raw", taskTypes=["work", "sort"])
        sent = await raw.recv_type("task")
        assert (sent["taskId"], sent["taskType"], sent["attempt"]) == (later, "sort", 1)
        assert sent["params"] == {"keys": [3, 1, 2]}
        await answer(raw, sent, [1, 2, 3])
        done = await reaches(ann, later, "succeeded")
        assert done["result"] == [1, 2, 3]
    assert payload(await listed(ann, created.agent_id))["total"] == 3


async def test_cancelling_a_queued_a_running_and_an_ended_task(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    async with (
        watch(server, created.agent_id, ann.token) as watcher,
        agent_socket(server.ws_url, created.token) as raw,
        kept_alive(raw),
    ):
        await raw.hello("raw", taskTypes=WORK, maxConcurrency=1)
        await ann.wait_status(created.agent_id, "online")
        running = await queued(ann, created.agent_id, parameters={"n": 1})
        sent = await raw.recv_type("task")
        assert sent["taskId"] == running
        waiting = await queued(ann, created.agent_id, parameters={"n": 2})
        behind = await queued(ann, created.agent_id, parameters={"n": 3})

        # Queued: cancelled at once; the agent never hears of it.
        response = await cancel(ann, waiting)
        assert response.status_code == 200, response.text
        assert payload(response) == {
            "success": True,
            "taskId": waiting,
            "status": "cancelled",
            "previousStatus": "queued",
        }
        view = await status_of(ann, waiting)
        assert (view["status"], view["message"], view["attempts"]) == ("cancelled", "Cancelled", 0)
        assert view["completedAt"] is not None

        # Running: cancelled, and the agent is told to stop; its slot goes to the next task.
        response = await cancel(ann, running)
        assert response.status_code == 200, response.text
        assert payload(response)["previousStatus"] == "running"
        got = await messages(raw, {"cancel", "task"})
        assert got["cancel"] == {"type": "cancel", "id": running}
        next_sent = got["task"]
        assert next_sent["taskId"] == behind
        # What the agent still sends for the cancelled task changes nothing.
        await progress(raw, running, 0.9, "almost")
        await answer(raw, sent, "too late")
        await progress(raw, behind, 0.5, "marker")
        await reaches(ann, behind, "running", message="marker")
        view = await status_of(ann, running)
        assert (view["status"], view["result"], view["progress"]) == ("cancelled", None, 0.0)

        # Ended: 409, whichever way it ended.
        await answer(raw, next_sent, "done")
        await reaches(ann, behind, "succeeded")
        for task_id, state in (
            (waiting, "cancelled"),
            (running, "cancelled"),
            (behind, "succeeded"),
        ):
            response = await cancel(ann, task_id)
            assert_problem(response, 409)
            assert payload(response)["currentStatus"] == state

        events = await updates(
            watcher, {waiting: "cancelled", running: "cancelled", behind: "succeeded"}
        )
        assert [e["status"] for e in events[running]] == ["queued", "running", "cancelled"]
        assert [e["status"] for e in events[waiting]] == ["queued", "cancelled"]
        assert events[waiting][-1]["message"] == "Cancelled"


async def test_tasks_of_another_users_agent_are_not_found_and_permissions_are_checked(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    robot = await people.join("robot@example.com", role="agent")
    admin = await people.admin()
    created = await ann.create_agent("offline")
    task_id = await queued(ann, created.agent_id)
    task_path = f"/api/tasks/{task_id}"

    for response in (
        await create(bob, created.agent_id, {"taskType": "work"}),
        await bob.call("GET", f"{task_path}/status"),
        await cancel(bob, task_id),
        await listed(bob, created.agent_id),
        await create(ann, "no-such-agent", {"taskType": "work"}),
        await ann.call("GET", "/api/tasks/no-such-task/status"),
        await cancel(ann, "no-such-task"),
        await listed(ann, "no-such-agent"),
    ):
        assert_problem(response, 404)
    # Someone else's idempotency key is no way in either.
    response = await create(bob, created.agent_id, {"taskType": "work", "idempotencyKey": "k"})
    assert_problem(response, 404)

    command = "Insufficient permissions: agents:command"
    assert_problem(await create(robot, created.agent_id, {"taskType": "work"}), 403, command)
    assert_problem(await cancel(robot, task_id), 403, command)
    read = "Insufficient permissions: agents:read"
    assert_problem(await robot.call("GET", f"{task_path}/status"), 403, read)
    assert_problem(await listed(robot, created.agent_id), 403, read)
    client = server.client
    assert (await client.post(f"/api/agents/{created.agent_id}/task", json={})).status_code == 401
    assert (await client.get(f"{task_path}/status")).status_code == 401
    assert (await client.post(f"{task_path}/cancel")).status_code == 401
    assert (await client.get(f"/api/agents/{created.agent_id}/tasks")).status_code == 401

    # The admin sees every agent's tasks; nothing above touched this one.
    assert (await status_of(admin, task_id))["status"] == "queued"
    row = await task_row(server.hub, task_id)
    assert (row.status, row.user_id) == ("queued", ann.user_id)
    assert payload(await listed(ann, created.agent_id))["total"] == 1


async def test_listing_an_agents_tasks_newest_first_by_status_and_page(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("offline")
    other = await ann.create_agent("other")
    ids = [await queued(ann, created.agent_id, parameters={"i": i}) for i in range(5)]
    await queued(ann, other.agent_id)
    for task_id in (ids[1], ids[3]):
        assert (await cancel(ann, task_id)).status_code == 200

    response = await listed(ann, created.agent_id)
    assert response.status_code == 200, response.text
    page = payload(response)
    assert set(page) == {"tasks", "total", "hasMore", "nextOffset"}
    assert (page["total"], page["hasMore"], page["nextOffset"]) == (5, False, None)
    assert [t["taskId"] for t in page["tasks"]] == ids[::-1]
    assert all(set(t) == STATUS_FIELDS for t in page["tasks"])
    assert page["tasks"][0] == await status_of(ann, ids[4]) | {
        "estimatedStartTime": page["tasks"][0]["estimatedStartTime"]
    }
    assert [t["queuePosition"] for t in page["tasks"]] == [3, None, 2, None, 1]

    first = payload(await listed(ann, created.agent_id, status="queued", limit=2))
    assert [t["taskId"] for t in first["tasks"]] == [ids[4], ids[2]]
    assert (first["total"], first["hasMore"], first["nextOffset"]) == (3, True, 2)
    rest = payload(await listed(ann, created.agent_id, status="queued", limit=2, offset=2))
    assert [t["taskId"] for t in rest["tasks"]] == [ids[0]]
    assert (rest["total"], rest["hasMore"], rest["nextOffset"]) == (3, False, None)
    cancelled = payload(await listed(ann, created.agent_id, status="cancelled"))
    assert [t["taskId"] for t in cancelled["tasks"]] == [ids[3], ids[1]]
    assert all(t["status"] == "cancelled" for t in cancelled["tasks"])
    beyond = payload(await listed(ann, created.agent_id, offset=10))
    assert (beyond["tasks"], beyond["total"], beyond["hasMore"]) == ([], 5, False)
    none = payload(await listed(ann, created.agent_id, status="succeeded"))
    assert (none["tasks"], none["total"]) == ([], 0)

    for params in ({"status": "done"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
        response = await listed(ann, created.agent_id, **params)
        assert response.status_code == 422, (params, response.text)


async def test_a_lost_lease_sends_the_task_again_and_the_last_attempt_fails_it(
    start_server: ServerStarter,
) -> None:
    clock = FakeClock()  # leases run out when the test moves the clock on, not after a wait
    async with start_server(task_lease_seconds=LEASE, clock=clock) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent("raw")
        hub = server.hub
        async with watch(server, created.agent_id, ann.token) as watcher:
            async with agent_socket(server.ws_url, created.token) as first, kept_alive(first):
                await first.hello("raw", taskTypes=WORK, maxConcurrency=2)
                await ann.wait_status(created.agent_id, "online")
                again = await queued(ann, created.agent_id, parameters={"n": 1})
                once = await queued(ann, created.agent_id, parameters={"n": 2}, maxAttempts=1)
                got = [await first.recv_type("task"), await first.recv_type("task")]
                assert [(m["taskId"], m["attempt"]) for m in got] == [(again, 1), (once, 1)]
                lost = got[0]
            # The agent is gone with both; their leases run out.
            clock.advance(LEASE * 2)

            async with agent_socket(server.ws_url, created.token) as second, kept_alive(second):
                await second.hello("raw", taskTypes=WORK, maxConcurrency=2)
                resent = await second.recv_type("task", timeout=10)
                assert resent == {**lost, "attempt": 2}
                failed = await reaches(ann, once, "failed")
                assert failed["error"] == "The agent lost the task 1 times (no heartbeat in time)"
                assert (failed["attempts"], failed["maxAttempts"]) == (1, 1)
                assert failed["completedAt"] is not None

                # Heartbeats of the connection holding it keep its lease.
                for _ in range(3):
                    clock.advance(LEASE * 0.6)
                    await second.heartbeat()
                assert await hub.tasks.reap() == 0
                row = await task_row(hub, again)
                assert (row.status, row.attempts) == ("running", 2)

                # The first attempt's result comes too late: dropped.
                await answer(second, lost, "stale")
                await progress(second, again, 0.5, "marker")
                view = await reaches(ann, again, "running", message="marker")
                assert (view["result"], view["attempts"]) == (None, 2)

                await answer(second, resent, "fresh")
                done = await reaches(ann, again, "succeeded")
                assert (done["result"], done["attempts"], done["error"]) == ("fresh", 2, None)

            events = await updates(watcher, {again: "succeeded", once: "failed"})
        assert [(e["status"], e["attempt"]) for e in events[again]] == [
            ("queued", 0),
            ("running", 1),
            ("queued", 1),
            ("running", 2),
            ("running", 2),
            ("succeeded", 2),
        ]
        assert events[again][2]["message"] == "Back in the queue after attempt 1"
        assert events[once][-1]["error"] == failed["error"]
        assert [e["status"] for e in events[once]] == ["queued", "running", "failed"]


async def test_the_demo_agent_counts_with_progress_to_the_end(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("demo")
    process = launcher.start(created.token, target=DEMO)
    await ann.wait_status(created.agent_id, "online", 20, process=process)

    response = await create(ann, created.agent_id, {"taskType": "dance"})
    assert_problem(response, 400)
    assert payload(response)["taskTypes"] == ["count"]

    async with watch(server, created.agent_id, ann.token) as watcher:
        four = await queued(ann, created.agent_id, "count", parameters={"steps": 4, "delay": 0.01})
        two = await queued(
            ann, created.agent_id, "count", parameters={"steps": 2, "delay": 0}, priority="high"
        )
        wrong = await queued(ann, created.agent_id, "count", parameters={"steps": "many"})
        events = await updates(watcher, {four: "succeeded", two: "succeeded", wrong: "failed"})

    assert [(e["status"], e["progress"]) for e in events[four]] == [
        ("queued", 0.0),
        ("running", 0.0),
        ("running", 0.25),
        ("running", 0.5),
        ("running", 0.75),
        ("running", 1.0),
        ("succeeded", 1.0),
    ]
    assert [e.get("message") for e in events[four][2:]] == [
        "step 1 of 4",
        "step 2 of 4",
        "step 3 of 4",
        "step 4 of 4",
        "step 4 of 4",
    ]
    assert events[four][-1]["result"] == {"counted": 4}
    assert events[two][-1]["result"] == {"counted": 2}

    done = await status_of(ann, four)
    assert (done["status"], done["progress"], done["result"]) == ("succeeded", 1.0, {"counted": 4})
    assert (done["attempts"], done["message"], done["error"]) == (1, "step 4 of 4", None)
    failed = await status_of(ann, wrong)
    assert (failed["status"], failed["error"]) == ("failed", "steps must be a number")
    page = payload(await listed(ann, created.agent_id, status="succeeded"))
    assert {t["taskId"] for t in page["tasks"]} == {four, two}
    assert all(t["status"] in ENDED for t in payload(await listed(ann, created.agent_id))["tasks"])


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_task_created_on_another_node_reaches_the_agent_and_can_be_cancelled(
    hubs: Hubs, tmp_path: Path
) -> None:
    near, far = await hubs.pair(agent_heartbeat_interval=0.2, agent_heartbeat_timeout=1.0)
    ann = await People(far).join("ann@example.com")
    demo = await ann.create_agent("demo")
    raw_agent = await ann.create_agent("raw")
    launcher = Launcher(near.ws_url, tmp_path)
    try:
        process = launcher.start(demo.token, target=DEMO)
        await ann.wait_status(demo.agent_id, "online", 20, process=process)
        assert near.hub.live.get(demo.agent_id) is not None
        assert far.hub.live.get(demo.agent_id) is None

        async with watch(far, demo.agent_id, ann.token) as watcher:
            task_id = await queued(
                ann, demo.agent_id, "count", parameters={"steps": 3, "delay": 0.01}
            )
            events = await updates(watcher, {task_id: "succeeded"})
        assert [e["progress"] for e in events[task_id]][-2:] == [1.0, 1.0]
        done = await status_of(ann, task_id)
        assert (done["status"], done["result"], done["progress"]) == (
            "succeeded",
            {"counted": 3},
            1.0,
        )

        async with agent_socket(near.ws_url, raw_agent.token) as raw, kept_alive(raw):
            await raw.hello("raw", taskTypes=WORK)
            await ann.wait_status(raw_agent.agent_id, "online")
            held = await queued(ann, raw_agent.agent_id)
            assert (await raw.recv_type("task"))["taskId"] == held
            response = await cancel(ann, held)
            assert response.status_code == 200, response.text
            assert payload(response)["previousStatus"] == "running"
            assert await raw.recv_type("cancel") == {"type": "cancel", "id": held}
    finally:
        launcher.kill_all()
