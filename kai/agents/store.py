"""Queries of the agents domain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.models import Agent, AgentLog
from kai.auth.models import User


async def get(session: AsyncSession, agent_id: str) -> Agent | None:
    return await session.get(Agent, agent_id)


async def by_token_hash(session: AsyncSession, token_hash: str) -> Agent | None:
    """The agent holding this token, unless its owner is disabled (then no agent is)."""
    query = (
        select(Agent)
        .join(User, User.id == Agent.owner_id)
        .where(Agent.token_hash == token_hash, User.disabled.is_(False))
    )
    return await session.scalar(query)


async def by_owner_and_name(session: AsyncSession, owner_id: str, name: str) -> Agent | None:
    query = select(Agent).where(Agent.owner_id == owner_id, Agent.name == name)
    return await session.scalar(query.order_by(Agent.created_at).limit(1))


async def visible(session: AsyncSession, *, owner_id: str | None) -> Sequence[Agent]:
    """Agents of ``owner_id``, or every agent when it is None."""
    query = select(Agent).order_by(Agent.created_at, Agent.id)
    if owner_id is not None:
        query = query.where(Agent.owner_id == owner_id)
    return (await session.scalars(query)).all()


async def count_owned(session: AsyncSession, owner_id: str) -> int:
    """How many agents ``owner_id`` has; on PostgreSQL the owner's row stays locked until the
    transaction ends, so that two creations at once cannot both take the last place."""
    await session.execute(select(User.id).where(User.id == owner_id).with_for_update())
    query = select(func.count()).select_from(Agent).where(Agent.owner_id == owner_id)
    return await session.scalar(query) or 0


async def set_state(session: AsyncSession, agent_id: str, **values: Any) -> None:
    await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))


async def set_state_if_connection(
    session: AsyncSession, agent_id: str, connection_id: str, **values: Any
) -> bool:
    """Update only while ``connection_id`` is still the agent's current connection."""
    result = await session.execute(
        update(Agent)
        .where(Agent.id == agent_id, Agent.connection_id == connection_id)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expire_presence(session: AsyncSession, now: datetime) -> list[str]:
    """Mark offline every agent whose holder stopped renewing its presence; returns their ids.

    One statement: an agent whose presence a node renewed meanwhile (it reconnected there) is
    neither updated nor returned, so that nobody announces it offline.
    """
    result = await session.execute(
        update(Agent)
        .where(Agent.presence_expires_at.is_not(None), Agent.presence_expires_at < now)
        .values(
            status="offline",
            health="unknown",
            presence_expires_at=None,
            status_changed_at=now,
        )
        .returning(Agent.id)
    )
    return list(result.scalars())


async def add_logs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(AgentLog), rows)


async def logs(
    session: AsyncSession,
    agent_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    min_level: int | None,
    limit: int,
    offset: int,
    newest_first: bool,
) -> tuple[Sequence[AgentLog], int]:
    where: list[ColumnElement[bool]] = [AgentLog.agent_id == agent_id]
    if start is not None:
        where.append(AgentLog.timestamp >= start)
    if end is not None:
        where.append(AgentLog.timestamp <= end)
    if min_level is not None:
        where.append(AgentLog.level_no >= min_level)
    total = await session.scalar(select(func.count()).select_from(AgentLog).where(*where)) or 0
    order = (
        (AgentLog.timestamp.desc(), AgentLog.id.desc())
        if newest_first
        else (AgentLog.timestamp, AgentLog.id)
    )
    rows = await session.scalars(
        select(AgentLog).where(*where).order_by(*order).limit(limit).offset(offset)
    )
    return rows.all(), total


async def all_logs(session: AsyncSession, agent_id: str) -> Sequence[AgentLog]:
    query = select(AgentLog).where(AgentLog.agent_id == agent_id).order_by(AgentLog.id)
    return (await session.scalars(query)).all()


async def remove(session: AsyncSession, agent_id: str) -> None:
    await session.execute(delete(AgentLog).where(AgentLog.agent_id == agent_id))
    await session.execute(delete(Agent).where(Agent.id == agent_id))
