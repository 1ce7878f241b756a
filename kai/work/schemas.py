"""Wire models of the work routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from kai.kit.schemas import Body, Page, Wire
from kai.protocol.bounds import FreeJson

CommandName = Annotated[str, Field(min_length=1, max_length=200, examples=["echo"])]


class CommandRequest(Body):
    command: CommandName
    parameters: FreeJson = Field(default_factory=dict, examples=[{"text": "hello"}])
    expects_response: bool = True
    timeout: Annotated[
        float | None, Field(gt=0, le=300, description="Seconds to wait for the answer")
    ] = None


class CommandResponse(Wire):
    success: bool
    command_id: str
    result: Any = None
    execution_time: float = Field(description="Seconds from sending to the agent's answer")
    agent_response: dict[str, Any] | None = Field(
        description="The agent's answer as it sent it: success, result or error, its own time"
    )


Priority = Literal["low", "medium", "high", "critical"]
TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class TaskRequest(Body):
    task_type: Annotated[str, Field(min_length=1, max_length=200, examples=["count"])]
    parameters: FreeJson = Field(default_factory=dict, examples=[{"to": 5}])
    priority: Priority = "medium"
    idempotency_key: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="Retrying a create with the same key returns the same task",
        ),
    ] = None
    max_attempts: Annotated[
        int | None, Field(ge=1, le=100, description="Lost leases allowed before it fails")
    ] = None


class TaskCreated(Wire):
    success: bool = True
    task_id: str
    status: TaskState
    queue_position: int | None = Field(description="1 is next; null once it left the queue")
    estimated_start_time: datetime | None
    created_at: datetime


class SubtaskSummary(Wire):
    """A task another agent runs on behalf of this one."""

    task_id: str
    agent_id: str
    task_type: str
    status: TaskState
    progress: float


class TaskStatus(Wire):
    task_id: str
    agent_id: str
    task_type: str
    status: TaskState
    priority: Priority
    progress: float = Field(ge=0, le=1)
    message: str | None
    result: Any = None
    error: str | None
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    queue_position: int | None
    estimated_start_time: datetime | None
    estimated_completion: datetime | None
    parent_task_id: str | None = Field(
        default=None, description="Set on a subtask: the task whose agent created it"
    )
    source_agent_id: str | None = Field(
        default=None, description="The agent that created this task, when an agent did"
    )
    subtasks: list[SubtaskSummary] = Field(
        default_factory=list, description="Tasks created for peers while this one ran"
    )


class TaskList(Page):
    tasks: list[TaskStatus]


class TaskCancelled(Wire):
    success: bool = True
    task_id: str
    status: TaskState
    previous_status: TaskState


StreamState = Literal["pending", "running", "completed", "failed", "cancelled"]


class StreamRequest(Body):
    prompt: Annotated[str, Field(min_length=1, max_length=200_000, examples=["Tell me a story"])]
    context: FreeJson = Field(default_factory=dict, examples=[{"conversation": "c-1"}])
    options: FreeJson = Field(default_factory=dict, examples=[{"temperature": 0.2}])


class StreamOpened(Wire):
    success: bool = True
    stream_id: str
    stream_url: str = Field(description="Server-Sent Events of the answer; honours Last-Event-ID")
    expires_at: datetime = Field(description="Until then the stream can be read back in full")
    status: StreamState


class StreamInfo(Wire):
    stream_id: str
    agent_id: str
    status: StreamState
    chunks: int = Field(description="Chunks stored so far (all of them once it has ended)")
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime


class StreamCancelled(Wire):
    success: bool = True
    stream_id: str
    status: StreamState
    previous_status: StreamState


class FileOut(Wire):
    file_id: str
    agent_id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    metadata: dict[str, Any]
    uploaded_at: datetime


class FileUploaded(FileOut):
    success: bool = True


class FileList(Page):
    files: list[FileOut]


class FileDeleted(Wire):
    success: bool = True
    file_id: str
