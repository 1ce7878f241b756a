"""Agent backups: one gzip'd JSON archive per deleted agent, and the way back."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Select, insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents import store
from kai.agents.models import Agent, AgentLog
from kai.auth import store as users
from kai.db import Base, UTCDateTime, utcnow
from kai.errors import BadRequest, Conflict
from kai.storage import Blobs

FORMAT: Final = "kai-agent-backup"
VERSION: Final = 2
READABLE: Final = frozenset({1, 2})  # version 1 held the agent and its logs only

Row = dict[str, Any]


def _as_is(row: Row) -> None:
    return None


@dataclass(frozen=True, slots=True)
class TablePart:
    """One table of an agent's work, as the part that owns it registered it for backups."""

    name: str  # its key in the archive's ``work``
    model: type[Base]
    rows: Callable[[str], Select[Any]]  # the query for one agent's rows
    # A restored row made consistent (work that was under way comes back ready to go on).
    settle: Callable[[Row], None] = _as_is
    # Run on the rows about to be restored, before they are inserted.
    prepare: Callable[[AsyncSession, list[Row]], Awaitable[None]] | None = None
    # The agent is deleted without a backup: what to let go of besides the rows.
    discard: Callable[[AsyncSession, list[Base]], None] | None = None


class Backups:
    """The parts an agent's backup gathers, in the order they are restored (a stream before
    its chunks); each part above the agents part registers its own tables."""

    def __init__(self) -> None:
        self.parts: list[TablePart] = []

    def add(self, part: TablePart) -> None:
        if any(known.name == part.name for known in self.parts):
            raise ValueError(f"a backup part named {part.name!r} exists already")
        self.parts.append(part)

    async def work_of(self, session: AsyncSession, agent_id: str) -> dict[str, list[Base]]:
        """Every row of the agent's work, by table, for its backup."""
        return {part.name: list(await session.scalars(part.rows(agent_id))) for part in self.parts}

    def discard(self, session: AsyncSession, work: dict[str, list[Base]]) -> None:
        for part in self.parts:
            if part.discard is not None:
                part.discard(session, work.get(part.name, []))

    async def restore(self, session: AsyncSession, document: dict[str, Any]) -> Agent:
        """Insert the archived agent, its logs and its work; it comes back offline."""
        agent = await _restore_agent(session, document)
        work = document.get("work") or {}
        for part in self.parts:
            rows = [_columns(part.model, row) for row in work.get(part.name, [])]
            for row in rows:
                part.settle(row)
            if part.prepare is not None:
                await part.prepare(session, rows)
            if rows:
                await session.execute(insert(part.model), rows)
        return agent


def _row(obj: Base) -> dict[str, Any]:
    values = {}
    for column in inspect(type(obj)).columns:
        value = getattr(obj, column.key)
        values[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return values


async def write(
    store: Blobs,
    *,
    agent: Agent,
    logs: Sequence[AgentLog],
    work: dict[str, list[Base]] | None = None,
) -> str:
    """Write the archive (``<id>.json.gz`` in ``store``) and return its id."""
    backup_id = f"{agent.id}-{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}"
    document = {
        "format": FORMAT,
        "version": VERSION,
        "createdAt": utcnow().isoformat(),
        "agent": _row(agent),
        "logs": [_row(log) for log in logs],
        "work": {name: [_row(row) for row in rows] for name, rows in (work or {}).items()},
    }
    data = await asyncio.to_thread(_archive, document)
    await store.put(archive_key(backup_id), data)
    return backup_id


def archive_key(backup_id: str) -> str:
    return f"{backup_id}.json.gz"


def _archive(document: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(document, default=str).encode())


def read(path: Path) -> dict[str, Any]:
    try:
        with gzip.open(path, "rb") as handle:
            document: dict[str, Any] = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"Not a readable agent backup: {type(exc).__name__}") from None
    if document.get("format") != FORMAT or document.get("version") not in READABLE:
        raise BadRequest("Not a kai agent backup of a version this hub knows")
    return document


def _columns(model: type[Base], values: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for column in inspect(model).columns:
        if column.key not in values:
            continue
        value = values[column.key]
        # UTCDateTime's python_type says ``object``: recognise the column by its type instead.
        if value is not None and isinstance(column.type, UTCDateTime):
            value = datetime.fromisoformat(value)
        result[column.key] = value
    return result


async def _restore_agent(session: AsyncSession, document: dict[str, Any]) -> Agent:
    """Insert the archived agent and its logs; it comes back offline, with its old token."""
    values = _columns(Agent, document["agent"])
    if await store.get(session, values["id"]) is not None:
        raise Conflict("An agent with this id exists already")
    if await store.by_token_hash(session, values["token_hash"]) is not None:
        raise Conflict("An agent with this token exists already")
    if await users.user_by_id(session, values["owner_id"]) is None:
        raise Conflict("The agent's owner no longer exists")
    values.update(
        status="offline",
        health="unknown",
        presence_expires_at=None,
        node_id=None,
        connection_id=None,
        connected_at=None,
    )
    agent = Agent(**values)
    session.add(agent)
    await session.flush()
    logs = [_columns(AgentLog, log) for log in document.get("logs", [])]
    for log in logs:
        log.pop("id", None)
    await store.add_logs(session, logs)
    return agent
