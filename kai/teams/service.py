"""Teams and grants: which of one owner's agents work together, and what each may do.

Coordination is default deny. An agent reaches another only through a grant its owner made,
naming the action (``command``, ``task``, ``stream`` or ``watch``) and the target (one agent, or
every member of a team). Agents of different owners never reach each other: a grant can only be
made within one owner's agents, and every use checks the owners again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.models import Agent
from kai.agents.service import AGENT_NOT_FOUND, Viewer
from kai.auth.audit import AuditLog
from kai.db import new_id, utcnow
from kai.errors import BadRequest, Conflict, NotFound, Unprocessable
from kai.teams.models import Grant, Team, TeamMember

ACTIONS: Final = ("command", "task", "stream", "watch")
TEAM_NOT_FOUND = "Team not found"
GRANT_NOT_FOUND = "Grant not found"
MAX_MEMBERS = 500


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this agent do that to that peer", as audited."""

    granted: bool
    reason: str


class Teams:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    # -- teams -------------------------------------------------------------------------------

    async def visible(self, session: AsyncSession, viewer: Viewer, team_id: str) -> Team:
        """The team, if ``viewer`` owns it or is an admin; otherwise 404."""
        team = await session.get(Team, team_id)
        if team is None or (not viewer.is_admin and team.owner_id != viewer.user_id):
            raise NotFound(TEAM_NOT_FOUND)
        return team

    async def list_visible(self, session: AsyncSession, viewer: Viewer) -> list[Team]:
        query = select(Team).order_by(Team.created_at, Team.id)
        if not viewer.is_admin:
            query = query.where(Team.owner_id == viewer.user_id)
        return list(await session.scalars(query))

    @staticmethod
    async def members(session: AsyncSession, team_ids: Iterable[str]) -> dict[str, list[str]]:
        """The member agent ids of each team, sorted."""
        ids = list(team_ids)
        found: dict[str, list[str]] = {team_id: [] for team_id in ids}
        if not ids:
            return found
        rows = await session.execute(
            select(TeamMember.team_id, TeamMember.agent_id)
            .where(TeamMember.team_id.in_(ids))
            .order_by(TeamMember.agent_id)
        )
        for team_id, agent_id in rows:
            found[team_id].append(agent_id)
        return found

    @staticmethod
    async def _check_members(session: AsyncSession, owner_id: str, agent_ids: list[str]) -> None:
        if len(agent_ids) > MAX_MEMBERS:
            raise Unprocessable(f"A team has at most {MAX_MEMBERS} agents")
        if not agent_ids:
            return
        owned = set(
            await session.scalars(
                select(Agent.id).where(Agent.id.in_(agent_ids), Agent.owner_id == owner_id)
            )
        )
        strangers = [a for a in agent_ids if a not in owned]
        if strangers:
            # The same answer for an agent of someone else as for one that does not exist.
            raise NotFound(AGENT_NOT_FOUND, agentIds=strangers)

    async def create(
        self,
        session: AsyncSession,
        viewer: Viewer,
        *,
        name: str,
        description: str | None,
        agent_ids: list[str],
    ) -> Team:
        agent_ids = list(dict.fromkeys(agent_ids))
        await self._check_members(session, viewer.user_id, agent_ids)
        now = utcnow()
        team = Team(
            id=new_id(),
            owner_id=viewer.user_id,
            name=name,
            description=description,
            created_at=now,
            updated_at=now,
        )
        session.add(team)
        await self._flush_name(session, name)
        session.add_all(TeamMember(team_id=team.id, agent_id=a) for a in agent_ids)
        await session.flush()
        return team

    @staticmethod
    async def _flush_name(session: AsyncSession, name: str) -> None:
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise Conflict(f"You already have a team named {name!r}") from None

    async def update(
        self,
        session: AsyncSession,
        team: Team,
        *,
        name: str | None,
        description: str | None,
        agent_ids: list[str] | None,
        fields: set[str],
    ) -> None:
        """Apply the ``fields`` given; ``agent_ids`` replaces the members."""
        if "name" in fields and name is not None and name != team.name:
            team.name = name
            await self._flush_name(session, name)
        if "description" in fields:
            team.description = description
        if "agent_ids" in fields and agent_ids is not None:
            wanted = list(dict.fromkeys(agent_ids))
            await self._check_members(session, team.owner_id, wanted)
            await session.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
            session.add_all(TeamMember(team_id=team.id, agent_id=a) for a in wanted)
        team.updated_at = utcnow()
        await session.flush()

    @staticmethod
    async def delete(session: AsyncSession, team: Team) -> None:
        await session.delete(team)
        await session.flush()

    @staticmethod
    async def teams_of(session: AsyncSession, agent_id: str) -> list[str]:
        """The teams the agent is a member of."""
        return list(
            await session.scalars(select(TeamMember.team_id).where(TeamMember.agent_id == agent_id))
        )

    # -- grants ------------------------------------------------------------------------------

    async def grant(
        self,
        session: AsyncSession,
        agent: Agent,
        *,
        target_agent_id: str | None,
        target_team_id: str | None,
        actions: list[str],
        created_by: str,
    ) -> Grant:
        """Let ``agent`` do ``actions`` to one agent or team of the same owner."""
        if (target_agent_id is None) == (target_team_id is None):
            raise BadRequest("Name exactly one target: targetAgentId or targetTeamId")
        if target_agent_id is not None:
            target = await session.get(Agent, target_agent_id)
            if target is None or target.owner_id != agent.owner_id:
                raise NotFound(AGENT_NOT_FOUND, agentId=target_agent_id)
            if target.id == agent.id:
                raise BadRequest("An agent needs no grant to reach itself")
        else:
            team = await session.get(Team, target_team_id)
            if team is None or team.owner_id != agent.owner_id:
                raise NotFound(TEAM_NOT_FOUND, teamId=target_team_id)
        grant = Grant(
            id=new_id(),
            owner_id=agent.owner_id,
            agent_id=agent.id,
            target_agent_id=target_agent_id,
            target_team_id=target_team_id,
            actions=sorted(set(actions)),
            created_by=created_by,
            created_at=utcnow(),
        )
        session.add(grant)
        await session.flush()
        return grant

    @staticmethod
    async def grants_of(session: AsyncSession, agent_id: str) -> list[Grant]:
        return list(
            await session.scalars(
                select(Grant).where(Grant.agent_id == agent_id).order_by(Grant.created_at, Grant.id)
            )
        )

    @staticmethod
    async def revoke(session: AsyncSession, agent_id: str, grant_id: str) -> None:
        grant = await session.get(Grant, grant_id)
        if grant is None or grant.agent_id != agent_id:
            raise NotFound(GRANT_NOT_FOUND)
        await session.delete(grant)
        await session.flush()

    # -- checks ------------------------------------------------------------------------------

    async def decide(
        self, session: AsyncSession, actor: Agent, target: Agent, action: str
    ) -> Decision:
        """Whether ``actor`` may do ``action`` to ``target``; audited either way."""
        decision = await self._decide(session, actor, target, action)
        self.audit.permission(
            f"peer:{action}",
            granted=decision.granted,
            user_id=actor.owner_id,
            resource=f"agent:{actor.id} -> agent:{target.id}",
        )
        return decision

    async def check(
        self, session: AsyncSession, actor: Agent, target: Agent, action: str
    ) -> Decision:
        """The same decision, not audited: for looking again at what was allowed before."""
        return await self._decide(session, actor, target, action)

    async def _decide(
        self, session: AsyncSession, actor: Agent, target: Agent, action: str
    ) -> Decision:
        if actor.owner_id != target.owner_id:
            return Decision(False, "Agents of different owners cannot reach each other")
        if actor.id == target.id:
            return Decision(True, "itself")
        grants = await self.grants_of(session, actor.id)
        teams = {g.target_team_id for g in grants if g.target_team_id and action in g.actions}
        if any(g.target_agent_id == target.id and action in g.actions for g in grants):
            return Decision(True, "granted")
        if teams and set(await self.teams_of(session, target.id)) & teams:
            return Decision(True, "granted through a team")
        return Decision(False, f"No grant lets this agent {VERBS[action]} that agent")

    async def member_of(self, session: AsyncSession, agent: Agent, team_id: str) -> Team | None:
        """The team, if ``agent`` is one of its members; None otherwise (audited)."""
        team = await session.get(Team, team_id)
        member = (
            team is not None
            and team.owner_id == agent.owner_id
            and await session.get(TeamMember, (team_id, agent.id)) is not None
        )
        self.audit.permission(
            "team:channel",
            granted=member,
            user_id=agent.owner_id,
            resource=f"agent:{agent.id} -> team:{team_id}",
        )
        return team if member else None


VERBS: Final = {
    "command": "send commands to",
    "task": "create tasks for",
    "stream": "open prompt streams on",
    "watch": "watch the events of",
}
