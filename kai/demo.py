"""The demo agent: deterministic, offline, and enough to try every part of kai.

Run it yourself with ``KAI_AGENT_TOKEN=TOKEN kai agent run kai.demo:agent --url
ws://127.0.0.1:8000/ws/agent``; ``make run`` starts it as a hosted agent.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kai import __version__
from kai.sdk import Agent, FileInfo, TaskContext

log = logging.getLogger("kai.demo")

agent = Agent("demo", version=__version__, max_concurrency=4)

MAX_SLEEP = 60.0


def _number(params: dict[str, Any], key: str, default: float, *, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    return min(high, max(low, float(value)))


@agent.command("echo")
async def echo(params: dict[str, Any]) -> dict[str, Any]:
    """Answer with the parameters it was given."""
    return params


@agent.command("sleep")
async def sleep(params: dict[str, Any]) -> dict[str, float]:
    """Wait ``seconds`` (at most 60), then answer."""
    seconds = _number(params, "seconds", 1.0, low=0.0, high=MAX_SLEEP)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@agent.command("fail")
async def fail(params: dict[str, Any]) -> None:
    """Always fail, with ``message`` if given."""
    raise RuntimeError(str(params.get("message") or "failed on purpose"))


LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


@agent.command("log")
async def write_log(params: dict[str, Any]) -> dict[str, str]:
    """Write ``message`` to the agent's log at ``level`` (debug, info or warning)."""
    message = params.get("message")
    if not isinstance(message, str) or not message:
        raise ValueError("message must be a non-empty string")
    level = params.get("level", "info")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}")
    log.log(LEVELS[level], "%s", message)
    return {"logged": message, "level": level}


@agent.task("count")
async def count(params: dict[str, Any], task: TaskContext) -> dict[str, int]:
    """Count to ``steps`` (default 5), reporting progress at every step."""
    steps = int(_number(params, "steps", 5, low=1, high=1000))
    delay = _number(params, "delay", 0.2, low=0.0, high=10.0)
    for step in range(1, steps + 1):
        await asyncio.sleep(delay)
        await task.progress(step / steps, f"step {step} of {steps}")
    log.info("counted to %d for task %s", steps, task.task_id)
    return {"counted": steps}


@agent.prompt
async def answer(
    prompt: str, context: dict[str, Any], options: dict[str, Any]
) -> AsyncIterator[str]:
    """Stream a deterministic answer word by word."""
    delay = _number(options, "delay", 0.05, low=0.0, high=2.0)
    words = f"You asked: {prompt.strip() or '(nothing)'}. This is the demo agent answering.".split()
    for i, word in enumerate(words):
        await asyncio.sleep(delay)
        yield word if i == 0 else " " + word


@agent.on_file
async def received(file: FileInfo) -> None:
    """Download the file (checking its size and SHA-256), log that, and let it go."""
    with tempfile.TemporaryDirectory(prefix="kai-demo-") as folder:
        await agent.download(file, Path(folder) / "upload")
    log.info("received file %s (%d bytes, SHA-256 checked)", file.filename, file.size)


@agent.setup
async def ready() -> None:
    log.info("demo agent ready")
