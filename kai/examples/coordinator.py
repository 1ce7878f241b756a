"""A coordinator agent that splits a task into subtasks for two worker agents and assembles
their results, through the hub (docs/teams.md).

Run the whole example against a hub (``make run`` in another terminal):

    .venv/bin/python -m kai.examples.coordinator --email admin@example.com --password PASSWORD

It signs in, registers three agents (``coordinator``, ``worker-a``, ``worker-b``) in a team,
grants the coordinator the right to create tasks for the team, runs the three agents, queues one
``count_words`` task on the coordinator and prints its result and its subtasks. Each agent can
also run on its own: ``KAI_AGENT_TOKEN=... kai agent run kai.examples.coordinator:worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

import orjson

from kai.sdk import Agent, TaskContext
from kai.sdk.client import KaiClient

WORKERS = ("worker-a", "worker-b")
TEAM = "example-team"

worker = Agent("worker", max_concurrency=2)
coordinator = Agent("coordinator", max_concurrency=4)


@worker.task("count_words")
async def count_words(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    """Count the words of ``text``, reporting progress line by line."""
    lines = str(params.get("text", "")).splitlines() or [""]
    counts: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        for word in line.lower().split():
            word = word.strip(".,;:!?\"'()")
            if word:
                counts[word] = counts.get(word, 0) + 1
        await task.progress(number / len(lines), f"line {number} of {len(lines)}")
    return {"words": sum(counts.values()), "counts": counts}


@coordinator.task("count_words")
async def split_and_count(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    """Split ``text`` in two halves, have each worker count one, and add their counts up."""
    lines = str(params.get("text", "")).splitlines()
    middle = (len(lines) + 1) // 2
    halves = ["\n".join(lines[:middle]), "\n".join(lines[middle:])]
    await task.progress(0.1, "sent to the workers")
    parts = await asyncio.gather(
        *(
            task.peer(name).task("count_words", {"text": half})
            for name, half in zip(params.get("workers", WORKERS), halves, strict=True)
        )
    )
    total: dict[str, int] = {}
    for part in parts:
        for word, count in part["counts"].items():
            total[word] = total.get(word, 0) + count
    top = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:5]
    return {"words": sum(total.values()), "parts": [p["words"] for p in parts], "top": top}


TEXT = """The hub relays work between people and agents.
Agents connect out to the hub and take the work they declare.
A coordinator agent splits the work for two worker agents.
The workers count the words and the coordinator adds the counts up."""


async def _agent(kai: KaiClient, name: str) -> tuple[str, str]:
    """A fresh agent named ``name`` (an older one of that name is deleted first)."""
    for old in await kai.agents():
        if old["name"] == name:
            await kai.delete_agent(old["id"], backup=False)
    created = await kai.create_agent(name, description="kai.examples.coordinator")
    return created["agentId"], created["agentToken"]


async def run_example(base_url: str, email: str, password: str, text: str = TEXT) -> dict[str, Any]:
    """Set up the agents, team and grant, run them, and return the finished task's status."""
    ws_url = base_url.replace("http", "ws", 1) + "/ws/agent"
    async with KaiClient(base_url) as kai:
        await kai.login(email, password)
        ids: dict[str, str] = {}
        running: list[asyncio.Task[None]] = []
        agents = [
            (coordinator, "coordinator"),
            (worker, WORKERS[0]),
            (_second_worker(), WORKERS[1]),
        ]
        for agent, name in agents:
            ids[name], token = await _agent(kai, name)
            running.append(asyncio.create_task(agent.run([ws_url], token)))
        try:
            for old in await kai.teams():
                if old["name"] == TEAM:
                    await kai.delete_team(old["id"])
            team = await kai.create_team(TEAM, [ids[w] for w in WORKERS])
            await kai.grant(ids["coordinator"], ["task"], target_team_id=team["id"])
            await asyncio.gather(*(a.connected.wait() for a, _ in agents))
            task = await kai.create_task(ids["coordinator"], "count_words", {"text": text})
            await kai.wait_task(task["taskId"], timeout=60)
            return await kai.task(task["taskId"])
        finally:
            for agent, _ in agents:
                agent.stop()
            for each in running:
                with contextlib.suppress(Exception):
                    await each


def _second_worker() -> Agent:
    """A second worker process in this example: the same handler under another agent."""
    second = Agent("worker", max_concurrency=2)
    second.task("count_words")(count_words)
    return second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", default="http://127.0.0.1:8000", help="the hub's base URL")
    parser.add_argument("--email", default=os.environ.get("KAI_EMAIL", "admin@example.com"))
    parser.add_argument(
        "--password",
        default=os.environ.get("KAI_PASSWORD"),
        help="the account's password (or set KAI_PASSWORD)",
    )
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("give --password (or set KAI_PASSWORD)")
    status = asyncio.run(run_example(args.hub, args.email, args.password))
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())  # noqa: T201
    return 0 if status["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
