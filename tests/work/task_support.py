"""Helpers of the task tests: the task routes called as a person, the ``tasks`` table read
back, raw agents answering tasks, and ``task_update`` events seen by a watcher."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from kai.container import Container as Hub
from kai.work.models import Task
from tests.agents.support import Person, RawAgent, eventually
from tests.realtime.client_support import Watcher
from tests.work.support import payload

ENDED = frozenset({"succeeded", "failed", "cancelled"})
CREATED_FIELDS = {
    "success",
    "taskId",
    "status",
    "queuePosition",
    "estimatedStartTime",
    "createdAt",
}
STATUS_FIELDS = {
    "taskId",
    "agentId",
    "taskType",
    "status",
    "priority",
    "progress",
    "message",
    "result",
    "error",
    "attempts",
    "maxAttempts",
    "createdAt",
    "startedAt",
    "completedAt",
    "queuePosition",
    "estimatedStartTime",
    "estimatedCompletion",
    "parentTaskId",
    "sourceAgentId",
    "subtasks",
}
# What the event log adds to every event; the task's own fields are the rest.
STAMP = ("agentId", "seq", "epoch", "timestamp")


async def create(person: Person, agent_id: str, body: Any) -> httpx.Response:
    return await person.call("POST", f"/api/agents/{agent_id}/task", json=body)


async def queued(person: Person, agent_id: str, task_type: str = "work", **body: Any) -> str:
    """Create a task (201 expected) and return its id."""
    response = await create(person, agent_id, {"taskType": task_type, **body})
    assert response.status_code == 201, response.text
    task_id: str = payload(response)["taskId"]
    return task_id


async def status_of(person: Person, task_id: str) -> dict[str, Any]:
    response = await person.call("GET", f"/api/tasks/{task_id}/status")
    assert response.status_code == 200, response.text
    return payload(response)


async def cancel(person: Person, task_id: str) -> httpx.Response:
    return await person.call("POST", f"/api/tasks/{task_id}/cancel")


async def listed(person: Person, agent_id: str, **params: Any) -> httpx.Response:
    return await person.call("GET", f"/api/agents/{agent_id}/tasks", params=params)


async def reaches(
    person: Person, task_id: str, status: str, *, timeout: float = 10.0, **fields: Any
) -> dict[str, Any]:
    """Poll the task's status until it reads ``status`` (and ``fields``); returns it."""

    async def reached() -> dict[str, Any] | None:
        view = await status_of(person, task_id)
        wanted = view["status"] == status and all(view[k] == v for k, v in fields.items())
        return view if wanted else None

    return await eventually(reached, timeout, what=f"task {task_id} reading {status} {fields}")


async def task_row(hub: Hub, task_id: str) -> Task:
    async with hub.db.session(write=False) as session:
        row = await session.get(Task, task_id)
    assert row is not None, f"task {task_id} not stored"
    return row


async def answer(
    agent: RawAgent,
    sent: dict[str, Any],
    result: Any = None,
    *,
    error: str | None = None,
    attempt: int | None = None,
) -> None:
    """The raw agent's ``task_result`` for the ``task`` message ``sent`` (a failure when
    ``error`` is given), from that message's attempt unless ``attempt`` says otherwise."""
    message: dict[str, Any] = {
        "type": "task_result",
        "taskId": sent["taskId"],
        "attempt": sent["attempt"] if attempt is None else attempt,
        "success": error is None,
    }
    if error is None:
        message["result"] = result
    else:
        message["error"] = error
    await agent.send(message)


async def progress(agent: RawAgent, task_id: str, value: float, message: str) -> None:
    await agent.send(
        {"type": "task_progress", "taskId": task_id, "progress": value, "message": message}
    )


async def messages(agent: RawAgent, kinds: set[str]) -> dict[str, dict[str, Any]]:
    """One message of each of ``kinds``, in whatever order they come (heartbeat acks skipped)."""
    got: dict[str, dict[str, Any]] = {}
    while set(got) != kinds:
        message = await agent.recv()
        if message["type"] != "heartbeat_ack":
            assert message["type"] in kinds - set(got), message
            got[message["type"]] = message
    return got


def when(text: str) -> datetime:
    """A time as the API writes it."""
    return datetime.fromisoformat(text)


def bare(event: dict[str, Any]) -> dict[str, Any]:
    """A ``task_update`` without what the event log stamps on every event."""
    assert isinstance(event["seq"], int), event
    return {k: v for k, v in event.items() if k not in STAMP}


async def updates(
    watcher: Watcher, until: dict[str, str], timeout: float = 10.0
) -> dict[str, list[dict[str, Any]]]:
    """The ``task_update`` events of each task in ``until`` (task id → status), read until
    each task's update of that status has arrived; other events are skipped."""
    seen: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in until}
    waiting = dict(until)
    while waiting:
        event = await watcher.recv(timeout)
        if event["type"] != "task_update":
            continue
        task_id = event["taskId"]
        assert task_id in seen, event
        seen[task_id].append(bare(event))
        if waiting.get(task_id) == event["status"]:
            del waiting[task_id]
    return seen
