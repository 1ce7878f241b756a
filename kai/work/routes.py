"""The contract's work routes: commands (tasks, prompt streams and uploads to come)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from kai.agents.routes import viewer
from kai.auth.deps import HubDep, Require
from kai.auth.service import Principal
from kai.openapi import errors
from kai.work.schemas import CommandRequest, CommandResponse

router = APIRouter(prefix="/api/agents", tags=["work"])

Commander = Annotated[Principal, Require("agents:command")]


@router.post("/{agentId}/command", responses=errors(400, 401, 403, 404, 409, 422, 504))
async def send_command(
    agentId: str,
    body: CommandRequest,
    principal: Commander,
    hub: HubDep,
) -> CommandResponse:
    """Run a command the agent declared and wait for its answer (504 when none comes in time)."""
    timeout = min(body.timeout or hub.settings.command_timeout, hub.settings.command_max_timeout)
    outcome = await hub.commands.execute(
        viewer(principal),
        agentId,
        command=body.command,
        parameters=body.parameters,
        timeout=timeout,
        expects_response=body.expects_response,
    )
    answer = None
    if body.expects_response:
        answer = {
            "success": outcome.success,
            "result": outcome.result,
            "error": outcome.error,
        }
    return CommandResponse(
        success=outcome.success,
        command_id=outcome.command_id,
        result=outcome.result,
        execution_time=round(outcome.execution_time, 6),
        agent_response=answer,
    )
