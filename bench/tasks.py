"""Durable tasks through the hub, from create to completed, beside arq on the same Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func
from websockets.asyncio.client import ClientConnection

from bench.hub import (
    clean_redis,
    drop_database,
    login,
    pg_database,
    raw_agent,
    start_hub,
    watcher,
)
from bench.report import Row, Sizes, rate, say

SLOTS = 32  # the agent's maxConcurrency, arq's max_jobs, and the creates in flight
ARQ_REDIS = RedisSettings(host="127.0.0.1", port=6379, database=9)
ARQ_POLL_DELAY = 0.01  # s; arq's default of 0.5 s would idle its worker between batches
DEADLINE = 600.0  # s for all tasks to succeed: a task that fails must not hang the run


async def bounded(count: int, start: Callable[[int], Awaitable[None]]) -> None:
    """Run ``start(0..count-1)`` with at most ``SLOTS`` of them at once."""
    gate = asyncio.Semaphore(SLOTS)

    async def one(i: int) -> None:
        async with gate:
            await start(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def _answer_tasks(agent: ClientConnection) -> None:
    """The agent's side: every ``task`` finished at once, successfully, with no result."""
    async for raw in agent:
        message = orjson.loads(raw)
        if message["type"] == "task":
            result = {
                "type": "task_result",
                "taskId": message["taskId"],
                "success": True,
                "attempt": message["attempt"],
            }
            await agent.send(orjson.dumps(result).decode())


async def _count_succeeded(ws: ClientConnection, total: int) -> None:
    """Read ``task_update`` events until ``total`` tasks have succeeded."""
    done: set[str] = set()
    async for raw in ws:
        text = raw if isinstance(raw, str) else raw.decode()
        if '"task_update"' in text and '"succeeded"' in text:
            event = orjson.loads(text)
            if event["status"] == "succeeded":
                done.add(event["taskId"])
                if len(done) == total:
                    return
    raise RuntimeError(f"the socket closed after {len(done)} of {total} tasks")


async def tasks_kai(port: int, count: int) -> float:
    """Tasks per second, from the first create to the last ``succeeded`` event."""
    session = await login(port)
    agent_id, token = await session.create_agent(f"tasks-{uuid.uuid4().hex[:6]}")
    limits = httpx.Limits(max_connections=SLOTS, max_keepalive_connections=SLOTS)
    async with (
        raw_agent(port, token, taskTypes=["noop"], maxConcurrency=SLOTS) as agent,
        httpx.AsyncClient(
            base_url=session.base, headers=session.headers, limits=limits, timeout=60
        ) as client,
    ):
        answering = asyncio.create_task(_answer_tasks(agent))
        ws = await watcher(port, agent_id, session.token)
        counting = asyncio.create_task(_count_succeeded(ws, count))

        async def create(i: int) -> None:
            response = await client.post(
                f"/api/agents/{agent_id}/task", json={"taskType": "noop", "parameters": {"n": i}}
            )
            response.raise_for_status()

        try:
            started = time.perf_counter()
            await bounded(count, create)
            await asyncio.wait_for(counting, DEADLINE)
            elapsed = time.perf_counter() - started
        finally:
            for task in (answering, counting):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ws.close()
        stored = await client.get(
            f"/api/agents/{agent_id}/tasks", params={"status": "succeeded", "limit": 1}
        )
        if stored.json()["total"] != count:
            raise RuntimeError(f"{stored.json()['total']} of {count} tasks stored as succeeded")
    return count / elapsed


async def tasks_arq(count: int) -> float:
    """The baseline: the same number of empty jobs through arq and an in-process Worker."""
    run = f"kaibench-{uuid.uuid4().hex[:8]}"
    finished = 0
    all_done = asyncio.Event()

    async def noop(ctx: dict[str, Any], n: int) -> None:
        return None

    async def after_job_end(ctx: dict[str, Any]) -> None:  # after its result is stored
        nonlocal finished
        finished += 1
        if finished == count or worker.jobs_failed:
            all_done.set()

    pool = await create_pool(ARQ_REDIS)
    worker = Worker(
        [func(noop, name="noop")],
        queue_name=f"{run}:queue",
        redis_pool=pool,
        max_jobs=SLOTS,
        poll_delay=ARQ_POLL_DELAY,
        handle_signals=False,
        after_job_end=after_job_end,
    )
    running = asyncio.create_task(worker.async_run())

    async def enqueue(i: int) -> None:
        job = await pool.enqueue_job("noop", i, _job_id=f"{run}-{i}", _queue_name=f"{run}:queue")
        if job is None:
            raise RuntimeError(f"arq refused job {i}")

    try:
        started = time.perf_counter()
        await bounded(count, enqueue)
        await asyncio.wait_for(all_done.wait(), DEADLINE)
        elapsed = time.perf_counter() - started
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await worker.close()
        await clean_redis("redis://127.0.0.1:6379/9", f"*{run}*")
    if worker.jobs_complete != count or worker.jobs_failed:
        raise RuntimeError(f"arq completed {worker.jobs_complete} of {count} jobs")
    return count / elapsed


async def tasks_row(name: str, port: int, count: int) -> Row:
    say(name)
    base = await tasks_arq(count)
    kai = await tasks_kai(port, count)
    baseline = f"arq, in-process worker, max_jobs {SLOTS}, same Redis"
    return rate(name, "tasks/s", kai, base, baseline=baseline, goal=">= arq's rate, durable")


async def tasks_rows(sizes: Sizes, work: Path) -> list[Row]:
    """Empty tasks on a fresh SQLite hub and on a fresh PostgreSQL database, beside arq."""
    name = f"tasks, {sizes.tasks:,} created over REST to completed"
    rows = []
    hub = start_hub(work)
    try:
        rows.append(await tasks_row(f"{name}, SQLite", hub.port, sizes.tasks))
    finally:
        hub.stop()
    database = await pg_database()
    if database is None:
        return rows
    hub = start_hub(work, database_url=database)
    try:
        rows.append(await tasks_row(f"{name}, PostgreSQL", hub.port, sizes.tasks))
    finally:
        hub.stop()
        await drop_database(database)
    return rows
