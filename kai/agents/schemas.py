"""Wire models of the agent routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from kai.kit.schemas import Body, Page, Wire
from kai.protocol.bounds import FreeJson

AgentStatus = Literal["offline", "online", "busy", "restarting", "error"]
AgentHealth = Literal["healthy", "degraded", "unhealthy", "unknown"]
Config = Annotated[FreeJson, Field(description="Free-form configuration for the agent")]


def _no_control_characters(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no name needs a control character.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control_characters)]
Kind = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_no_control_characters)]
Description = Annotated[str, Field(max_length=4000), AfterValidator(_no_nul)]


class AgentData(Body):
    name: Annotated[Name, Field(examples=["summarizer"])]
    description: Description | None = None
    type: Annotated[Kind, Field(examples=["llm"])] = "generic"
    config: Config = Field(default_factory=dict)


class CreateAgentRequest(Body):
    agent_data: AgentData


class AgentUpdates(Body):
    name: Name | None = None
    description: Description | None = None
    type: Kind | None = None
    config: Config | None = None


class UpdateAgentRequest(Body):
    updates: AgentUpdates


class RestartOptions(Body):
    timeout: Annotated[float, Field(gt=0, le=300, description="Seconds to wait for the agent")] = 30
    reason: Annotated[str | None, Field(max_length=200)] = None


class RestartRequest(Body):
    options: RestartOptions = Field(default_factory=RestartOptions)


class Capabilities(Wire):
    name: str | None = None
    version: str | None = None
    commands: list[str] = Field(default_factory=list)
    task_types: list[str] = Field(default_factory=list)
    streaming: bool = False
    files: bool = False
    max_concurrency: int = 1
    sdk: str | None = None


class Metrics(Wire):
    messages_in: int = 0
    messages_out: int = 0
    commands_handled: int = 0
    commands_failed: int = 0
    tasks_handled: int = 0
    tasks_failed: int = 0
    handling_time_mean: float | None = Field(None, description="Seconds, over recent work")
    handling_time_p95: float | None = Field(None, description="Seconds, over recent work")
    reconnects: int = 0


class AgentOut(Wire):
    id: str
    name: str
    description: str | None
    type: str
    config: dict[str, Any]
    owner_id: str
    created_at: datetime
    updated_at: datetime
    status: AgentStatus
    health: AgentHealth
    metrics: Metrics
    capabilities: Capabilities
    last_activity: datetime | None
    uptime: float | None = Field(description="Seconds since the current connection began")
    status_message: str | None = None


class AgentsList(Wire):
    agents: list[AgentOut]
    total: int
    timestamp: datetime


class CreateAgentResponse(Wire):
    success: Literal[True] = True
    agent: AgentOut
    agent_id: str
    status: AgentStatus
    agent_token: str = Field(description="Shown once: the agent process connects with it")


class UpdateAgentResponse(Wire):
    success: Literal[True] = True
    agent: AgentOut
    updated_fields: list[str]


class AgentStatusOut(Wire):
    agent_id: str
    status: AgentStatus
    health: AgentHealth
    metrics: Metrics
    last_update: datetime
    uptime: float | None


class RestartResponse(Wire):
    success: bool
    agent_id: str
    previous_status: AgentStatus
    current_status: AgentStatus
    restart_time: float | None = Field(
        description="Seconds from the request until the agent was back; null if it is not yet"
    )
    restarted_at: datetime | None


class DeleteResponse(Wire):
    success: Literal[True] = True
    agent_id: str
    deleted_at: datetime
    backup_created: bool
    backup_id: str | None = None


class TokenResponse(Wire):
    success: Literal[True] = True
    agent_id: str
    agent_token: str = Field(description="Shown once; the previous token stops working now")
    rotated_at: datetime


class LogEntry(Wire):
    id: int
    timestamp: datetime
    level: str
    message: str
    logger: str | None
    source: str
    extra: dict[str, Any] | None


class LogsPage(Page):
    logs: list[LogEntry]
