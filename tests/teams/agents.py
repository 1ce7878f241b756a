"""The agents the coordination crash tests run as real processes:
``kai agent run tests.teams.agents:worker`` and ``tests.teams.agents:coordinator``.

Each writes down every task attempt it starts and ends, one JSON line each, in the file named by
``TEAMS_RECORD`` (appends of one short line are atomic, so processes that follow one another may
share the file)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kai.sdk import Agent, TaskContext

RECORD_ENV = "TEAMS_RECORD"


def record(event: str, task: TaskContext, **details: Any) -> None:
    """One line: what happened to which task, on which attempt, in which process."""
    line = {
        "event": event,
        "task": task.task_id,
        "attempt": task.attempt,
        "pid": os.getpid(),
        **details,
    }
    with Path(os.environ[RECORD_ENV]).open("ab") as sink:
        sink.write(orjson.dumps(line) + b"\n")


def make_worker() -> Agent:
    agent = Agent("worker", max_concurrency=2)

    @agent.task("double")
    async def double(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        """Double ``n``; the first attempt hangs when ``hangFirst`` says so."""
        record("start", task)
        if task.attempt == 1 and params.get("hangFirst"):
            await asyncio.sleep(3600)
        record("done", task)
        return {"n": 2 * int(params["n"]), "attempt": task.attempt, "pid": os.getpid()}

    return agent


def make_coordinator() -> Agent:
    agent = Agent("coordinator", max_concurrency=2)

    @agent.task("delegate")
    async def delegate(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        """Queue one subtask of ``taskType`` for ``peer`` and return its result."""
        record("start", task)
        handle = await task.peer(params["peer"]).submit(params["taskType"], params["params"])
        record("submitted", task, subtask=handle.task_id, replayed=handle.replayed)
        result = await handle.result()
        record("done", task)
        return {"result": result, "subtask": handle.task_id, "attempt": task.attempt}

    return agent


worker = make_worker()
coordinator = make_coordinator()


@dataclass(frozen=True)
class Line:
    event: str
    task: str
    attempt: int
    pid: int
    subtask: str | None = None
    replayed: bool | None = None


def lines(path: Path) -> list[Line]:
    """What the agents wrote down so far."""
    if not path.exists():
        return []
    return [Line(**orjson.loads(raw)) for raw in path.read_bytes().splitlines() if raw]
