"""Helpers of the work tests: raw agents kept alive, and the ``commands`` table read back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from kai.container import Container as Hub
from kai.work.models import Command
from tests.agents.support import RawAgent, eventually

DEMO = "kai.demo:agent"


@asynccontextmanager
async def kept_alive(agent: RawAgent, interval: float = 0.2) -> AsyncIterator[RawAgent]:
    """The raw agent sends a heartbeat every ``interval`` s (their acks are skipped by
    ``recv_type``), so that it stays online however long the test takes."""

    async def beat() -> None:
        while True:
            await agent.send({"type": "heartbeat"})
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def command_rows(hub: Hub, agent_id: str) -> dict[str, Command]:
    """The agent's rows of the ``commands`` table, by command id (the records this hub
    holds written first: they are written behind)."""
    await hub.commands.records.flush()
    async with hub.db.session(write=False) as session:
        rows = (await session.scalars(select(Command).where(Command.agent_id == agent_id))).all()
    return {row.id: row for row in rows}


async def command_row(hub: Hub, command_id: str) -> Command:
    """The command's row: written behind by the node that sent it, which may be another."""
    await hub.commands.records.flush()

    async def recorded() -> Command | None:
        async with hub.db.session(write=False) as session:
            return await session.get(Command, command_id)

    return await eventually(recorded, 5, what=f"command {command_id} recorded")


def payload(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body
