"""``task`` messages: progress then a result, the concurrency bound, and ``cancel``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kai.sdk import Agent, TaskContext
from tests.sdk.support import FakeHub, running, until


def task_message(task_id: str, task_type: str, attempt: int = 1, **params: Any) -> dict[str, Any]:
    return {
        "type": "task",
        "taskId": task_id,
        "taskType": task_type,
        "params": params,
        "attempt": attempt,
    }


@dataclass
class Tracker:
    """What the task handlers saw: how many ran at once, which were cancelled."""

    running: int = 0
    peak: int = 0
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def tasking_agent(max_concurrency: int = 1) -> tuple[Agent, Tracker]:
    agent = Agent("tasks", max_concurrency=max_concurrency)
    tracker = Tracker()

    @agent.task("count")
    async def count(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        steps = int(params["steps"])
        for step in range(1, steps + 1):
            await asyncio.sleep(0.01)
            await task.progress(step / steps, f"step {step} of {steps}")
        return {"counted": steps, "attempt": task.attempt, "taskId": task.task_id}

    @agent.task("clamp")
    async def clamp(params: dict[str, Any], task: TaskContext) -> None:
        await task.progress(-0.5)
        await task.progress(7)

    @agent.task("busy")
    async def busy(params: dict[str, Any], task: TaskContext) -> str:
        tracker.running += 1
        tracker.peak = max(tracker.peak, tracker.running)
        tracker.started.append(task.task_id)
        try:
            await asyncio.sleep(float(params.get("seconds", 0.2)))
        except asyncio.CancelledError:
            tracker.cancelled.append(task.task_id)
            raise
        finally:
            tracker.running -= 1
        return task.task_id

    @agent.task("forever")
    async def forever(params: dict[str, Any], task: TaskContext) -> None:
        tracker.started.append(task.task_id)
        try:
            step = 0
            while True:
                step += 1
                await task.progress(min(0.9, step / 100), f"tick {step}")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            tracker.cancelled.append(task.task_id)
            raise

    @agent.task("broken")
    def broken(params: dict[str, Any]) -> None:  # plain function, fewer arguments
        raise LookupError("no such document")

    return agent, tracker


async def test_a_task_reports_progress_then_its_result(hub: FakeHub) -> None:
    agent, _ = tasking_agent()
    async with running(agent, hub.url):
        side = await hub.connection()
        await side.send(task_message("t1", "count", attempt=2, steps=4))

        result = await side.first("task_result", taskId="t1")
        assert result["success"] is True
        assert result["result"] == {"counted": 4, "attempt": 2, "taskId": "t1"}
        progress = side.of("task_progress", taskId="t1")
        assert [p["progress"] for p in progress] == [0.25, 0.5, 0.75, 1.0]
        assert [p["message"] for p in progress] == [f"step {i} of 4" for i in range(1, 5)]
        mine = [m for m in side.messages if m.get("taskId") == "t1"]
        assert mine[-1] is result  # the result comes after every progress message

        # Progress is kept within 0..1 and a message is only sent when there is one.
        await side.send(task_message("t2", "clamp"))
        await side.first("task_result", taskId="t2")
        assert side.of("task_progress", taskId="t2") == [
            {"type": "task_progress", "taskId": "t2", "attempt": 1, "progress": 0.0},
            {"type": "task_progress", "taskId": "t2", "attempt": 1, "progress": 1.0},
        ]
    assert (agent.stats.tasks_handled, agent.stats.tasks_failed) == (2, 0)


async def test_failed_and_unknown_tasks_report_why(hub: FakeHub) -> None:
    agent, _ = tasking_agent()
    async with running(agent, hub.url):
        side = await hub.connection()
        await side.send(task_message("t1", "broken"))
        await side.send(task_message("t2", "translate"))

        broken = await side.first("task_result", taskId="t1")
        assert (broken["success"], broken["error"]) == (False, "no such document")
        unknown = await side.first("task_result", taskId="t2")
        assert (unknown["success"], unknown["error"]) == (False, "Unknown task type: translate")
        await side.send(task_message("t3", "count", steps=1))
        assert (await side.first("task_result", taskId="t3"))["success"] is True
    assert (agent.stats.tasks_handled, agent.stats.tasks_failed) == (3, 2)


async def test_max_concurrency_bounds_the_tasks_running_at_once(hub: FakeHub) -> None:
    agent, tracker = tasking_agent(max_concurrency=2)
    async with running(agent, hub.url):
        side = await hub.connection()
        ids = [f"t{i}" for i in range(5)]
        for task_id in ids:
            await side.send(task_message(task_id, "busy", seconds=0.2))

        # Two start at once, the other three wait for a free slot.
        await until(lambda: len(tracker.started) == 2, what="two tasks started")
        await asyncio.sleep(0.1)
        assert tracker.started == ids[:2]
        assert side.of("task_result") == []

        results = await side.several("task_result", 5, timeout=10)
        assert sorted(r["result"] for r in results) == ids
        assert all(r["success"] for r in results)
        assert tracker.peak == 2
        assert sorted(tracker.started) == ids


async def test_cancel_stops_a_running_task(hub: FakeHub) -> None:
    agent, tracker = tasking_agent(max_concurrency=1)
    async with running(agent, hub.url):
        side = await hub.connection()
        await side.send(task_message("long", "forever"))
        await side.several("task_progress", 3, taskId="long")

        await side.send({"type": "cancel", "id": "long"})
        await until(lambda: tracker.cancelled == ["long"], what="the cancel")
        # The one slot is free again: the next task runs and answers.
        await side.send(task_message("next", "count", steps=2))
        assert (await side.first("task_result", taskId="next"))["success"] is True
        sent = len(side.of("task_progress", taskId="long"))
        await asyncio.sleep(0.2)  # ten ticks of the cancelled task, had it gone on
        assert len(side.of("task_progress", taskId="long")) == sent
        assert side.of("task_result", taskId="long") == []
        # Cancelling what is not running (any more) is harmless.
        await side.send({"type": "cancel", "id": "long"})
        await side.send({"type": "cancel", "id": "never-was"})
        await side.send(task_message("after", "count", steps=1))
        assert (await side.first("task_result", taskId="after"))["success"] is True


async def test_cancel_of_a_waiting_task_frees_its_turn(hub: FakeHub) -> None:
    agent, tracker = tasking_agent(max_concurrency=1)
    async with running(agent, hub.url):
        side = await hub.connection()
        await side.send(task_message("first", "busy", seconds=0.3))
        await side.send(task_message("queued", "busy", seconds=0.3))
        await until(lambda: tracker.started == ["first"], what="first started")
        await side.send({"type": "cancel", "id": "queued"})
        await side.send(task_message("third", "busy", seconds=0.01))

        third = await side.first("task_result", taskId="third")
        assert third["success"] is True
        assert tracker.started == ["first", "third"]
        assert side.of("task_result", taskId="queued") == []
