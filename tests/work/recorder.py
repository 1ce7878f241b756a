"""The agent of the crash tests, run as a real process: ``kai agent run
tests.work.recorder:agent``. It writes down every task and command it starts and ends, one
JSON line each, in the file named by ``CRASH_RECORD`` (appends of one short line are atomic,
so agent processes that follow one another may share the file)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from kai.sdk import Agent, CommandContext, TaskContext

RECORD_ENV = "CRASH_RECORD"
MAX_CONCURRENCY = 4

agent = Agent("recorder", version="1", max_concurrency=MAX_CONCURRENCY)


def record(event: str, kind: str, work_id: str, attempt: int = 0) -> None:
    """One line: what happened to which task or command, on which attempt, in which process."""
    line = {"event": event, "kind": kind, "id": work_id, "attempt": attempt, "pid": os.getpid()}
    with Path(os.environ[RECORD_ENV]).open("ab") as sink:
        sink.write(orjson.dumps(line) + b"\n")


@agent.task("count")
async def count(params: dict[str, Any], task: TaskContext) -> dict[str, int]:
    """Count to ``steps``, ``delay`` s a step (``firstDelay`` on the first attempt)."""
    record("start", "task", task.task_id, task.attempt)
    steps = int(params.get("steps", 1))
    delay = float(params.get("firstDelay" if task.attempt == 1 else "delay", params["delay"]))
    for step in range(1, steps + 1):
        await asyncio.sleep(delay)
        await task.progress(step / steps)
    record("done", "task", task.task_id, task.attempt)
    return {"counted": steps}


@agent.command("sleep")
async def sleep(params: dict[str, Any], ctx: CommandContext) -> dict[str, float]:
    record("start", "command", ctx.command_id)
    seconds = float(params["seconds"])
    await asyncio.sleep(seconds)
    record("done", "command", ctx.command_id)
    return {"slept": seconds}


@agent.command("echo")
async def echo(params: dict[str, Any]) -> dict[str, Any]:
    return params
