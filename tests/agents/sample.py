"""The agent the tests run as a real process: ``kai agent run tests.agents.sample:agent``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from kai.sdk import Agent, TaskContext

log = logging.getLogger("tests.agents.sample")

agent = Agent("sample", version="1.2.3", max_concurrency=2)

COMMANDS = ["add", "echo"]
TASK_TYPES = ["count"]
SETUP_MESSAGE = "sample setup ran"
TEARDOWN_MESSAGE = "sample teardown ran"
# What the setup hook logs, by level; DEBUG stays below the SDK's default level.
SETUP_RECORDS = {
    "INFO": SETUP_MESSAGE,
    "WARNING": "sample warning on setup",
    "ERROR": "sample error on setup",
}


@agent.command("echo")
async def echo(params: dict[str, Any]) -> dict[str, Any]:
    return params


@agent.command("add")
def add(params: dict[str, Any]) -> dict[str, float]:
    return {"sum": float(params.get("a", 0)) + float(params.get("b", 0))}


@agent.task("count")
async def count(params: dict[str, Any], task: TaskContext) -> dict[str, int]:
    steps = int(params.get("steps", 3))
    for step in range(1, steps + 1):
        await asyncio.sleep(0.01)
        await task.progress(step / steps)
    return {"counted": steps}


@agent.prompt
async def words(
    prompt: str, context: dict[str, Any], options: dict[str, Any]
) -> AsyncIterator[str]:
    for word in prompt.split():
        yield word


@agent.setup
def setup() -> None:
    log.debug("sample debug on setup")
    for level, message in SETUP_RECORDS.items():
        log.log(logging.getLevelNamesMapping()[level], message)


@agent.teardown
async def teardown() -> None:
    log.info(TEARDOWN_MESSAGE)
