"""``/api/teams`` and ``/api/agents/{agentId}/grants``: who works together, and how."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.deps import RegistryDep
from kai.agents.routes import viewer
from kai.auth.deps import DbSession, Require
from kai.auth.service import Principal
from kai.db import after_commit
from kai.kit.openapi import errors
from kai.protocol.control import FeedsRecheck, Kick
from kai.realtime.broker import Broker
from kai.realtime.connection import CloseCode
from kai.realtime.deps import BrokerDep
from kai.realtime.events import team_log
from kai.teams.deps import PeersDep, TeamsDep
from kai.teams.models import Grant, Team
from kai.teams.peers import Peers
from kai.teams.schemas import (
    CreateGrantRequest,
    CreateTeamRequest,
    DeletedGrant,
    DeletedTeam,
    GrantOut,
    GrantsList,
    TeamOut,
    TeamsList,
    UpdateTeamRequest,
)
from kai.teams.service import Teams

router = APIRouter(tags=["teams"])

Reader = Annotated[Principal, Require("agents:read")]
Updater = Annotated[Principal, Require("agents:update")]


async def _out(session: AsyncSession, teams: list[Team]) -> list[TeamOut]:
    members = await Teams.members(session, [t.id for t in teams])
    return [
        TeamOut(
            id=t.id,
            name=t.name,
            description=t.description,
            owner_id=t.owner_id,
            agent_ids=members[t.id],
            channel_url=f"/ws/teams/{t.id}",
            created_at=t.created_at,
            updated_at=t.updated_at,
        )
        for t in teams
    ]


@router.get("/api/teams", responses=errors(401, 403))
async def list_teams(principal: Reader, teams: TeamsDep, session: DbSession) -> TeamsList:
    """Your teams (every team, for an admin), each with its member agents."""
    listed = await _out(session, await teams.list_visible(session, viewer(principal)))
    return TeamsList(teams=listed, total=len(listed))


@router.post(
    "/api/teams", status_code=status.HTTP_201_CREATED, responses=errors(401, 403, 404, 409, 422)
)
async def create_team(
    body: CreateTeamRequest, principal: Updater, teams: TeamsDep, session: DbSession
) -> TeamOut:
    """Group some of your agents into a team; its members share a channel."""
    team = await teams.create(
        session,
        viewer(principal),
        name=body.name,
        description=body.description,
        agent_ids=body.agent_ids,
    )
    return (await _out(session, [team]))[0]


@router.get("/api/teams/{teamId}", responses=errors(401, 403, 404))
async def get_team(teamId: str, principal: Reader, teams: TeamsDep, session: DbSession) -> TeamOut:
    """One team and its members."""
    team = await teams.visible(session, viewer(principal), teamId)
    return (await _out(session, [team]))[0]


@router.put("/api/teams/{teamId}", responses=errors(401, 403, 404, 409, 422))
async def update_team(
    teamId: str,
    body: UpdateTeamRequest,
    principal: Updater,
    teams: TeamsDep,
    session: DbSession,
    peers: PeersDep,
    broker: BrokerDep,
) -> TeamOut:
    """Rename a team, describe it, or replace its members (`agentIds`)."""
    team = await teams.visible(session, viewer(principal), teamId)
    await teams.update(
        session,
        team,
        name=body.name,
        description=body.description,
        agent_ids=body.agent_ids,
        fields=body.model_fields_set,
    )
    if "agent_ids" in body.model_fields_set:
        await _recheck_feeds(peers, broker, session, team.owner_id)
    return (await _out(session, [team]))[0]


@router.delete("/api/teams/{teamId}", responses=errors(401, 403, 404))
async def delete_team(
    teamId: str,
    principal: Updater,
    broker: BrokerDep,
    teams: TeamsDep,
    session: DbSession,
    peers: PeersDep,
) -> DeletedTeam:
    """Remove a team; the grants that name it go with it. Its agents stay."""
    team = await teams.visible(session, viewer(principal), teamId)
    await teams.delete(session, team)
    await _recheck_feeds(peers, broker, session, team.owner_id, team_id=teamId)
    closing = Kick(agent_id=team_log(teamId), code=CloseCode.TEAM_DELETED).wire()
    after_commit(session, lambda: broker.broadcast({**closing, "reason": "Team deleted"}))
    return DeletedTeam(team_id=teamId)


async def _recheck_feeds(
    peers: Peers,
    broker: Broker,
    session: AsyncSession,
    owner_id: str,
    *,
    team_id: str | None = None,
) -> None:
    """Commit, then close the feeds the owner's agents lost the right to: on this node before
    the answer (so what comes after it is never seen), and on the other nodes at once."""
    await session.commit()
    await peers.recheck(owner_id, gone_team=team_id)
    await broker.broadcast(FeedsRecheck(owner_id=owner_id, team_id=team_id).wire())


def _grant_out(grant: Grant) -> GrantOut:
    return GrantOut.model_validate(grant)


@router.get("/api/agents/{agentId}/grants", responses=errors(401, 403, 404))
async def list_grants(
    agentId: str, principal: Reader, registry: RegistryDep, teams: TeamsDep, session: DbSession
) -> GrantsList:
    """What this agent may do to which of your other agents and teams."""
    await registry.visible(session, viewer(principal), agentId)
    grants = [_grant_out(g) for g in await teams.grants_of(session, agentId)]
    return GrantsList(grants=grants, total=len(grants))


@router.post(
    "/api/agents/{agentId}/grants",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 404, 422),
)
async def create_grant(
    agentId: str,
    body: CreateGrantRequest,
    principal: Updater,
    registry: RegistryDep,
    teams: TeamsDep,
    session: DbSession,
) -> GrantOut:
    """Let this agent send commands to, create tasks for, open streams on or watch one other
    agent of the same owner (`targetAgentId`) or every member of one team (`targetTeamId`)."""
    agent = await registry.visible(session, viewer(principal), agentId)
    grant = await teams.grant(
        session,
        agent,
        target_agent_id=body.target_agent_id,
        target_team_id=body.target_team_id,
        actions=list(body.actions),
        created_by=principal.user_id,
    )
    return _grant_out(grant)


@router.delete("/api/agents/{agentId}/grants/{grantId}", responses=errors(401, 403, 404))
async def delete_grant(
    agentId: str,
    grantId: str,
    principal: Updater,
    registry: RegistryDep,
    teams: TeamsDep,
    session: DbSession,
    peers: PeersDep,
    broker: BrokerDep,
) -> DeletedGrant:
    """Take a grant back; uses of it are refused from now on."""
    agent = await registry.visible(session, viewer(principal), agentId)
    await teams.revoke(session, agentId, grantId)
    await _recheck_feeds(peers, broker, session, agent.owner_id)
    return DeletedGrant(grant_id=grantId)
