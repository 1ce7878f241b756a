"""The contract's agent routes, plus token rotation and logs."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from kai.agents.deps import RegistryDep
from kai.agents.schemas import (
    AgentOut,
    AgentsList,
    AgentStatusOut,
    CreateAgentRequest,
    CreateAgentResponse,
    DeleteResponse,
    LogEntry,
    LogsPage,
    RestartRequest,
    RestartResponse,
    TokenResponse,
    UpdateAgentRequest,
    UpdateAgentResponse,
)
from kai.agents.service import Viewer
from kai.auth.deps import DbSession, Require
from kai.auth.rbac import Role
from kai.auth.service import Principal
from kai.db import utcnow
from kai.kit.openapi import errors
from kai.kit.params import Offset
from kai.kit.schemas import UtcDatetime, page_fields
from kai.protocol.agent import LEVELS
from kai.protocol.bounds import MAX_INT

router = APIRouter(prefix="/api/agents", tags=["agents"])

Reader = Annotated[Principal, Require("agents:read")]
Creator = Annotated[Principal, Require("agents:create")]
Updater = Annotated[Principal, Require("agents:update")]
Deleter = Annotated[Principal, Require("agents:delete")]

MAX_LOG_PAGE = 1000


def viewer(principal: Principal) -> Viewer:
    return Viewer(principal.user_id, principal.role == Role.ADMIN)


@router.get("", responses=errors(401, 403))
async def list_agents(principal: Reader, registry: RegistryDep, session: DbSession) -> AgentsList:
    """Your agents (every agent, for an admin), each with its live status, health and metrics."""
    now = utcnow()
    agents = await registry.list_visible(session, viewer(principal))
    views = [AgentOut.model_validate(registry.view(a, now)) for a in agents]
    return AgentsList(agents=views, total=len(views), timestamp=now)


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(401, 403, 409, 422))
async def create_agent(
    body: CreateAgentRequest, principal: Creator, registry: RegistryDep, session: DbSession
) -> CreateAgentResponse:
    """Register an agent; the answer holds its token, shown this once. An account owns at most
    ``KAI_MAX_AGENTS_PER_USER`` agents (409 past it); admins are not limited."""
    data = body.agent_data
    agent, token = await registry.create(
        session,
        owner_id=principal.user_id,
        capped=principal.role != Role.ADMIN,
        name=data.name,
        description=data.description,
        type=data.type,
        config=data.config,
    )
    view = AgentOut.model_validate(registry.view(agent))
    return CreateAgentResponse(agent=view, agent_id=agent.id, status=view.status, agent_token=token)


@router.get("/{agentId}", responses=errors(401, 403, 404))
async def get_agent(
    agentId: str,
    principal: Reader,
    registry: RegistryDep,
    session: DbSession,
) -> AgentOut:
    """One agent, enriched with its live state."""
    agent = await registry.visible(session, viewer(principal), agentId)
    return AgentOut.model_validate(registry.view(agent))


@router.put("/{agentId}", responses=errors(401, 403, 404, 422))
async def update_agent(
    agentId: str,
    body: UpdateAgentRequest,
    principal: Updater,
    registry: RegistryDep,
    session: DbSession,
) -> UpdateAgentResponse:
    """Change an agent's name, description, type or config."""
    agent = await registry.visible(session, viewer(principal), agentId)
    changes = body.updates.model_dump(exclude_unset=True)
    for key in ("name", "type", "config"):
        if key in changes and changes[key] is None:
            changes.pop(key)
    changed = await registry.update(session, agent, changes)
    view = AgentOut.model_validate(registry.view(agent))
    return UpdateAgentResponse(agent=view, updated_fields=[_camel(f) for f in changed])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@router.get("/{agentId}/status", responses=errors(401, 403, 404))
async def agent_status(
    agentId: str,
    principal: Reader,
    registry: RegistryDep,
    session: DbSession,
) -> AgentStatusOut:
    """The agent's status, health, metrics and uptime."""
    agent = await registry.visible(session, viewer(principal), agentId)
    view = registry.view(agent)
    return AgentStatusOut(
        agent_id=agent.id,
        status=view["status"],
        health=view["health"],
        metrics=view["metrics"],
        last_update=max(filter(None, (view["last_activity"], view["status_changed_at"]))),
        uptime=view["uptime"],
    )


@router.post("/{agentId}/restart", responses=errors(401, 403, 404, 409, 422, 503))
async def restart_agent(
    agentId: str,
    principal: Updater,
    registry: RegistryDep,
    body: RestartRequest | None = None,
) -> RestartResponse:
    """Ask the agent to restart; answers once it is back, or when `options.timeout` runs out."""
    options = (body or RestartRequest()).options
    result = await registry.restart(
        viewer(principal), agentId, timeout=options.timeout, reason=options.reason
    )
    return RestartResponse(
        success=result.success,
        agent_id=agentId,
        previous_status=result.previous_status,
        current_status=result.current_status,
        restart_time=result.restart_time,
        restarted_at=result.restarted_at,
    )


@router.delete("/{agentId}", responses=errors(401, 403, 404, 422))
async def delete_agent(
    agentId: str,
    principal: Deleter,
    registry: RegistryDep,
    session: DbSession,
    backup: Annotated[bool, Query(description="Write a backup archive first")] = True,
) -> DeleteResponse:
    """Delete the agent (after backing it up, by default) and close its connection."""
    await registry.flush_logs()  # before the unit of work begins: the backup holds them all
    agent = await registry.visible(session, viewer(principal), agentId)
    backup_id = await registry.delete(session, agent, keep_backup=backup)
    return DeleteResponse(
        agent_id=agentId,
        deleted_at=utcnow(),
        backup_created=backup_id is not None,
        backup_id=backup_id,
    )


@router.post("/{agentId}/token", responses=errors(401, 403, 404))
async def rotate_token(
    agentId: str,
    principal: Updater,
    registry: RegistryDep,
    session: DbSession,
) -> TokenResponse:
    """Issue a new agent token; the old one stops working and its connection is closed."""
    agent = await registry.visible(session, viewer(principal), agentId)
    token, rotated_at = await registry.rotate_token(session, agent)
    return TokenResponse(agent_id=agent.id, agent_token=token, rotated_at=rotated_at)


@router.get("/{agentId}/logs", responses=errors(401, 403, 404, 422))
async def agent_logs(
    agentId: str,
    principal: Reader,
    registry: RegistryDep,
    session: DbSession,
    start_time: Annotated[UtcDatetime | None, Query(alias="startTime")] = None,
    end_time: Annotated[UtcDatetime | None, Query(alias="endTime")] = None,
    level: Annotated[
        Literal[
            "DEBUG",
            "INFO",
            "WARNING",
            "ERROR",
            "CRITICAL",
            "debug",
            "info",
            "warning",
            "error",
            "critical",
        ]
        | None,
        Query(description="This level and above"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_INT, description=f"At most {MAX_LOG_PAGE} are returned")
    ] = 100,
    offset: Offset = 0,
    order: Annotated[Literal["desc", "asc"], Query(description="desc: newest first")] = "desc",
) -> LogsPage:
    """The agent's log records, filtered by time and level, newest first by default."""
    await registry.flush_logs()  # before the unit of work begins, so that it sees them
    agent = await registry.visible(session, viewer(principal), agentId)
    limit = min(limit, MAX_LOG_PAGE)
    rows, total = await registry.logs(
        session,
        agent.id,
        start=start_time,
        end=end_time,
        min_level=LEVELS[level.upper()] if level else None,
        limit=limit,
        offset=offset,
        newest_first=order == "desc",
    )
    entries = [LogEntry.model_validate(row) for row in rows]
    return LogsPage(logs=entries, **page_fields(total=total, offset=offset, count=len(entries)))
