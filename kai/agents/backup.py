"""Agent backups: one gzip'd JSON archive per deleted agent, and the way back."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Select, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents import store
from kai.agents.models import Agent, AgentLog
from kai.auth import store as users
from kai.db import Base, UTCDateTime, utcnow
from kai.errors import BadRequest, Conflict
from kai.work.models import Command, StoredFile, Stream, StreamChunk, Task

FORMAT: Final = "kai-agent-backup"
VERSION: Final = 2
READABLE: Final = frozenset({1, 2})  # version 1 held the agent and its logs only

# The agent's work, in the order it is restored (a stream before its chunks).
WORK: Final[dict[str, type[Base]]] = {
    "commands": Command,
    "tasks": Task,
    "streams": Stream,
    "streamChunks": StreamChunk,
    "files": StoredFile,
}


def _row(obj: Base) -> dict[str, Any]:
    values = {}
    for column in inspect(type(obj)).columns:
        value = getattr(obj, column.key)
        values[column.key] = value.isoformat() if isinstance(value, datetime) else value
    return values


async def work_of(session: AsyncSession, agent_id: str) -> dict[str, list[Base]]:
    """Every row of the agent's work, by table, for its backup."""
    found: dict[str, list[Base]] = {}
    for name, model in WORK.items():
        query: Select[Any]
        if model is StreamChunk:
            query = (
                select(StreamChunk)
                .join(Stream, Stream.id == StreamChunk.stream_id)
                .where(Stream.agent_id == agent_id)
            )
        else:
            query = select(model).where(model.agent_id == agent_id)  # type: ignore[attr-defined]
        found[name] = list(await session.scalars(query))
    return found


def write(
    directory: Path,
    *,
    agent: Agent,
    logs: Sequence[AgentLog],
    work: dict[str, list[Base]] | None = None,
) -> str:
    """Write the archive (mode 0600) and return its id, the file name without suffix."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    backup_id = f"{agent.id}-{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}"
    document = {
        "format": FORMAT,
        "version": VERSION,
        "createdAt": utcnow().isoformat(),
        "agent": _row(agent),
        "logs": [_row(log) for log in logs],
        "work": {name: [_row(row) for row in rows] for name, rows in (work or {}).items()},
    }
    path = directory / f"{backup_id}.json.gz"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as handle:
        handle.write(json.dumps(document, default=str).encode())
        raw.flush()
        os.fsync(raw.fileno())
    return backup_id


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


async def restore(session: AsyncSession, document: dict[str, Any]) -> Agent:
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
    work = document.get("work") or {}
    for name, model in WORK.items():
        rows = [_columns(model, row) for row in work.get(name, [])]
        for row in rows:
            _settle(name, row)
        if name == "tasks":
            await _drop_lost_parents(session, rows)
        if rows:
            await session.execute(insert(model), rows)
    return agent


async def _drop_lost_parents(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """A subtask whose parent task is gone (its agent deleted) comes back without one."""
    parents = {row["parent_id"] for row in rows if row.get("parent_id")}
    if not parents:
        return
    here = {row["id"] for row in rows}
    found = set(await session.scalars(select(Task.id).where(Task.id.in_(parents))))
    for row in rows:
        if row.get("parent_id") and row["parent_id"] not in found | here:
            row["parent_id"] = None


def _settle(table: str, row: dict[str, Any]) -> None:
    """Work that was under way when the agent was deleted comes back ready to go on."""
    if table == "tasks" and row.get("status") == "running":
        row.update(status="queued", lease_owner=None, lease_expires_at=None)
    elif table == "streams" and row.get("status") in ("pending", "running"):
        row.update(status="failed", error="The agent was deleted", completed_at=utcnow())
    elif table == "commands" and row.get("status") == "pending":
        row.update(status="failed", error="The agent was deleted", completed_at=utcnow())
