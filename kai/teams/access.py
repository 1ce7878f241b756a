"""Who an agent is, and which of its owner's agents it may reach: a peer by id or by name,
if a grant allows the action (checked and audited by ``Teams``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.models import Agent
from kai.auth.models import User
from kai.teams.service import Teams

UNKNOWN_PEER = "Unknown peer"


class Refused(Exception):
    """A coordination request the hub will not carry out; the text goes back to the agent."""


async def actor_of(session: AsyncSession, agent_id: str) -> Agent:
    """The agent making a request, while it and its owner still stand."""
    actor = await session.get(Agent, agent_id)
    if actor is None:
        raise Refused("This agent no longer exists")
    owner = await session.get(User, actor.owner_id)
    if owner is None or owner.disabled:
        raise Refused("This agent's owner is disabled")
    return actor


async def peer_of(
    teams: Teams, session: AsyncSession, actor: Agent, peer: str, action: str
) -> Agent:
    """The peer named by id or by name among the owner's agents, if a grant allows
    ``action`` on it. Agents of other owners are unknown, whatever their id."""
    target = await session.get(Agent, peer)
    if target is not None and target.owner_id != actor.owner_id:
        await teams.decide(session, actor, target, action)  # audited as refused
        raise Refused(UNKNOWN_PEER)
    if target is None:
        named = list(
            await session.scalars(
                select(Agent).where(Agent.owner_id == actor.owner_id, Agent.name == peer).limit(2)
            )
        )
        if not named:
            raise Refused(UNKNOWN_PEER)
        if len(named) > 1:
            raise Refused(f"Several of your agents are named {peer!r}: name the peer by id")
        target = named[0]
    decision = await teams.decide(session, actor, target, action)
    if not decision.granted:
        raise Refused(decision.reason)
    return target
