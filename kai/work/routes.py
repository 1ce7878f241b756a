"""The contract's work routes: commands and durable tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.deps import RegistryDep
from kai.agents.routes import viewer
from kai.auth.deps import DbSession, Require
from kai.auth.service import Principal
from kai.core import DatabaseDep, SettingsDep
from kai.kit.openapi import errors
from kai.kit.params import Offset
from kai.kit.schemas import page_fields
from kai.work.deps import CommandsDep, TasksDep
from kai.work.models import PRIORITY_NAMES, Task
from kai.work.schemas import (
    CommandRequest,
    CommandResponse,
    SubtaskSummary,
    TaskCancelled,
    TaskCreated,
    TaskList,
    TaskRequest,
    TaskState,
    TaskStatus,
)
from kai.work.tasks import Tasks

router = APIRouter(prefix="/api/agents", tags=["work"])
tasks_router = APIRouter(prefix="/api/tasks", tags=["work"])

Commander = Annotated[Principal, Require("agents:command")]
Reader = Annotated[Principal, Require("agents:read")]
MAX_TASK_PAGE = 500


@router.post("/{agentId}/command", responses=errors(400, 401, 403, 404, 409, 422, 504))
async def send_command(
    agentId: str,
    body: CommandRequest,
    principal: Commander,
    commands: CommandsDep,
    settings: SettingsDep,
) -> CommandResponse:
    """Run a command the agent declared and wait for its answer (504 when none comes in time)."""
    timeout = min(body.timeout or settings.command_timeout, settings.command_max_timeout)
    outcome = await commands.execute(
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


@router.post(
    "/{agentId}/task",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 404, 409, 422),
)
async def create_task(
    agentId: str,
    body: TaskRequest,
    principal: Commander,
    db: DatabaseDep,
    tasks: TasksDep,
    response: Response,
) -> TaskCreated:
    """Queue a task; it is committed before this answers. Retrying with the same
    ``idempotencyKey`` answers with the same task (``Idempotent-Replayed: true``)."""
    task, replayed = await tasks.create(
        viewer(principal),
        agentId,
        task_type=body.task_type,
        parameters=body.parameters,
        priority=body.priority,
        idempotency_key=body.idempotency_key,
        max_attempts=body.max_attempts,
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    async with db.session(write=False) as session:
        current = await session.get(Task, task.id)
        task = current or task
        estimate = await tasks.estimate(session, task)
    return TaskCreated(
        task_id=task.id,
        status=task.status,
        queue_position=estimate.queue_position if task.status == "queued" else None,
        estimated_start_time=estimate.estimated_start,
        created_at=task.created_at,
    )


@router.get("/{agentId}/tasks", responses=errors(401, 403, 404, 422))
async def list_tasks(
    agentId: str,
    principal: Reader,
    registry: RegistryDep,
    tasks: TasksDep,
    session: DbSession,
    task_status: Annotated[TaskState | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TASK_PAGE)] = 50,
    offset: Offset = 0,
) -> TaskList:
    """The agent's tasks, newest first, optionally of one status."""
    await registry.visible(session, viewer(principal), agentId)
    rows, total = await tasks.listed(
        session, agentId, status=task_status, limit=limit, offset=offset
    )
    children = await tasks.subtasks_of(session, [row.id for row in rows])
    statuses = [await task_status_of(tasks, session, row, children.get(row.id, [])) for row in rows]
    return TaskList(tasks=statuses, **page_fields(total=total, offset=offset, count=len(rows)))


async def task_status_of(
    tasks: Tasks, session: AsyncSession, task: Task, subtasks: list[Task] | None = None
) -> TaskStatus:
    estimate = await tasks.estimate(session, task)
    if subtasks is None:
        subtasks = (await tasks.subtasks_of(session, [task.id])).get(task.id, [])
    return TaskStatus(
        task_id=task.id,
        agent_id=task.agent_id,
        task_type=task.task_type,
        status=task.status,
        priority=PRIORITY_NAMES[task.priority],
        progress=task.progress,
        message=task.message,
        result=task.result,
        error=task.error,
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        created_at=task.created_at,
        started_at=task.started_at,
        completed_at=task.completed_at,
        queue_position=estimate.queue_position if task.status == "queued" else None,
        estimated_start_time=estimate.estimated_start,
        estimated_completion=estimate.estimated_completion,
        parent_task_id=task.parent_id,
        source_agent_id=task.source_agent_id,
        subtasks=[
            SubtaskSummary(
                task_id=child.id,
                agent_id=child.agent_id,
                task_type=child.task_type,
                status=child.status,
                progress=child.progress,
            )
            for child in subtasks
        ],
    )


@tasks_router.get("/{taskId}/status", responses=errors(401, 403, 404))
async def task_status(
    taskId: str, principal: Reader, tasks: TasksDep, session: DbSession
) -> TaskStatus:
    """Where a task is: its status, progress, result and estimates."""
    task = await tasks.visible(session, viewer(principal), taskId)
    return await task_status_of(tasks, session, task)


@tasks_router.post("/{taskId}/cancel", responses=errors(401, 403, 404, 409))
async def cancel_task(taskId: str, principal: Commander, tasks: TasksDep) -> TaskCancelled:
    """Cancel a queued task at once; a running one is cancelled and its agent told to stop.
    A task that already ended is a 409."""
    task, previous = await tasks.cancel(viewer(principal), taskId)
    return TaskCancelled(
        task_id=task.id,
        status=task.status,
        previous_status=previous,
    )
