"""The agent protocol: the messages on ``/ws/agent`` and its close codes.

Shared by the hub and the SDK; see docs/agent-protocol.md for the prose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

from kai.protocol.bounds import MAX_INT, MAX_SEQ, within_bounds

PROTOCOL_VERSION: Final = 1
MAX_LOG_BATCH: Final = 500
MAX_LOG_MESSAGE: Final = 16_384


class Close:
    """WebSocket close codes on the agent connection and what the agent should do."""

    NORMAL: Final = (
        1000  # the hub or agent is done; an SDK reconnects only if it was not asked to stop
    )
    GOING_AWAY: Final = 1001  # the hub is shutting down: reconnect with backoff
    AUTH_FAILED: Final = 1008  # bad or missing token: do not reconnect with the same token
    TOO_BIG: Final = 1009  # a message over the size limit: fix the agent, then reconnect
    SERVER_ERROR: Final = 1011  # the hub failed: reconnect with backoff
    RESTART: Final = 1012  # the agent restarts on the hub's request (sent by the agent)
    REPLACED: Final = 4000  # another connection with this token took over: stop
    TOKEN_REVOKED: Final = 4001  # the token was rotated: stop
    HEARTBEAT_TIMEOUT: Final = 4002  # nothing heard within the heartbeat timeout: reconnect
    DELETED: Final = 4004  # the agent was deleted: stop
    PROTOCOL_ERROR: Final = 4005  # the first message was not ``hello`` in time: fix, reconnect
    OWNER_DISABLED: Final = 4006  # the agent's owner was disabled: stop


FINAL_CLOSE_CODES: Final = frozenset(
    {Close.AUTH_FAILED, Close.REPLACED, Close.TOKEN_REVOKED, Close.DELETED, Close.OWNER_DISABLED}
)


def _without_nul(value: str) -> str:
    # PostgreSQL's text cannot hold NUL (SQLite's can): store the same on both.
    return value.replace("\x00", "\ufffd")


Text = Annotated[str, AfterValidator(_without_nul)]


class _Message(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Health = Literal["healthy", "degraded", "unhealthy"]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Hello(_Message):
    """The agent's first message: who it is and what it can do."""

    type: Literal["hello"]
    name: Name
    version: Annotated[str, Field(max_length=60)] = "0"
    commands: Annotated[list[Name], Field(max_length=500)] = Field(default_factory=list)
    task_types: Annotated[list[Name], Field(max_length=500)] = Field(default_factory=list)
    streaming: bool = False
    files: bool = False
    max_concurrency: Annotated[int, Field(ge=1, le=1000)] = 1
    sdk: Annotated[str | None, Field(max_length=60)] = None


class AgentMetrics(_Message):
    """Counters the agent keeps of its own work."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    commands_handled: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0
    commands_failed: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0
    tasks_handled: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0
    tasks_failed: Annotated[int, Field(ge=0, le=MAX_SEQ)] = 0
    handling_time_mean: Annotated[float | None, Field(ge=0)] = None
    handling_time_p95: Annotated[float | None, Field(ge=0)] = None


class Heartbeat(_Message):
    type: Literal["heartbeat"]
    health: Health | None = None
    metrics: AgentMetrics | None = None


class StatusReport(_Message):
    type: Literal["status"]
    status: Literal["online", "busy", "error"]
    health: Health | None = None
    message: Annotated[Text, Field(max_length=500)] | None = None


def _utc(value: datetime) -> datetime:
    """A time without an offset is UTC; one that UTC cannot hold is refused."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


class LogRecord(_Message):
    timestamp: Annotated[datetime, AfterValidator(_utc)] | None = None
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    message: Annotated[Text, Field(max_length=MAX_LOG_MESSAGE)]
    logger: Annotated[Text, Field(max_length=200)] | None = None
    extra: dict[str, Any] | None = None


class LogBatch(_Message):
    type: Literal["log"]
    records: Annotated[list[LogRecord], Field(min_length=1, max_length=MAX_LOG_BATCH)]


class CommandResult(_Message):
    """The agent's answer to a ``command``."""

    type: Literal["command_result"]
    command_id: Annotated[str, Field(min_length=1, max_length=64)]
    success: bool
    result: Any = None
    error: Annotated[str | None, Field(max_length=MAX_LOG_MESSAGE)] = None
    execution_time: Annotated[float | None, Field(ge=0)] = None


WorkId = Annotated[str, Field(min_length=1, max_length=64)]
MAX_CHUNK: Final = 256 * 1024


class TaskProgress(_Message):
    """How far the agent is with a task."""

    type: Literal["task_progress"]
    task_id: WorkId
    progress: Annotated[float, Field(ge=0, le=1)]
    message: Annotated[Text, Field(max_length=500)] | None = None
    attempt: Annotated[int | None, Field(ge=1, le=MAX_INT)] = None


class TaskResult(_Message):
    """How a task ended on the agent. ``attempt`` (from the ``task`` message) lets the hub
    take the result only from the attempt that holds the task."""

    type: Literal["task_result"]
    task_id: WorkId
    success: bool
    result: Any = None
    error: Annotated[Text | None, Field(max_length=MAX_LOG_MESSAGE)] = None
    attempt: Annotated[int | None, Field(ge=1, le=MAX_INT)] = None


class StreamChunk(_Message):
    """One piece of a prompt stream's answer; ``index`` counts from 0 with no gap."""

    type: Literal["stream_chunk"]
    stream_id: WorkId
    index: Annotated[int, Field(ge=0, le=MAX_INT)]
    chunk: Annotated[Text, Field(max_length=MAX_CHUNK)]


class StreamEnd(_Message):
    """The end of a prompt stream, after its last chunk."""

    type: Literal["stream_end"]
    stream_id: WorkId
    status: Literal["completed", "failed", "cancelled"]
    chunks: Annotated[int | None, Field(ge=0, le=MAX_INT)] = None
    error: Annotated[Text | None, Field(max_length=MAX_LOG_MESSAGE)] = None


# -- coordination: an agent working with its peers through the hub ------------------------------

RequestId = Annotated[str, Field(min_length=1, max_length=64)]
PeerName = Annotated[str, Field(min_length=1, max_length=200)]
Params = Annotated[dict[str, Any], Field(default_factory=dict)]
Priority = Literal["low", "medium", "high", "critical"]


class PeerCommand(_Message):
    """Send a command to a peer; the answer comes back as ``peer_reply``."""

    type: Literal["peer_command"]
    request_id: RequestId
    peer: PeerName  # the peer's agent id, or its name among the owner's agents
    command: Name
    params: Params
    timeout: Annotated[float, Field(gt=0, le=300)] | None = None


class PeerTask(_Message):
    """Queue a task for a peer; a subtask of ``parentTaskId`` (a task this agent is running)."""

    type: Literal["peer_task"]
    request_id: RequestId
    peer: PeerName
    task_type: Name
    params: Params
    priority: Priority = "medium"
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    parent_task_id: WorkId | None = None


class PeerTaskStatus(_Message):
    """Where a task this agent created stands (answered as ``peer_reply``)."""

    type: Literal["peer_task_status"]
    request_id: RequestId
    task_id: WorkId


class PeerTaskCancel(_Message):
    """Cancel a task this agent created."""

    type: Literal["peer_task_cancel"]
    request_id: RequestId
    task_id: WorkId


class PeerStream(_Message):
    """Open a prompt stream on a peer; its chunks come as ``peer_stream_chunk``."""

    type: Literal["peer_stream"]
    request_id: RequestId
    peer: PeerName
    prompt: Annotated[Text, Field(min_length=1, max_length=100_000)]
    context: Params
    options: Params


class Subscribe(_Message):
    """Follow a team channel (``team:<id>``) or a peer's events (``agent:<id or name>``),
    from after ``since`` in ``epoch`` when resuming, as ``feed`` messages."""

    type: Literal["subscribe"]
    request_id: RequestId | None = None
    feed: Annotated[str, Field(min_length=6, max_length=210)]
    since: Annotated[int, Field(ge=0)] | None = None
    epoch: Annotated[str, Field(max_length=64)] | None = None


class Unsubscribe(_Message):
    type: Literal["unsubscribe"]
    feed: Annotated[str, Field(min_length=6, max_length=210)]


class TeamPublish(_Message):
    """Put a message on a team's channel, in order, for every subscriber."""

    type: Literal["team_publish"]
    request_id: RequestId | None = None
    team_id: WorkId
    topic: Annotated[Text, Field(min_length=1, max_length=200)] = "message"
    data: Any = None


COORDINATION_MESSAGES: Final = (
    PeerCommand,
    PeerTask,
    PeerTaskStatus,
    PeerTaskCancel,
    PeerStream,
    Subscribe,
    Unsubscribe,
    TeamPublish,
)
COORDINATION_TYPES: Final = frozenset(
    kind.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for kind in COORDINATION_MESSAGES
)
Coordination = (
    PeerCommand
    | PeerTask
    | PeerTaskStatus
    | PeerTaskCancel
    | PeerStream
    | Subscribe
    | Unsubscribe
    | TeamPublish
)

AnyAgentMessage = (
    Hello
    | Heartbeat
    | StatusReport
    | LogBatch
    | CommandResult
    | TaskProgress
    | TaskResult
    | StreamChunk
    | StreamEnd
    | Coordination
)


# The whole message is checked once, before any part of it: free-form parts (params, results,
# log extras, channel data) can then nest no deeper than the hub can store and relay.
AgentMessage = Annotated[
    AnyAgentMessage, Field(discriminator="type"), BeforeValidator(within_bounds)
]
AGENT_MESSAGE: Final[TypeAdapter[AnyAgentMessage]] = TypeAdapter(AgentMessage)
AGENT_MESSAGE_TYPES: Final = frozenset(
    {
        "hello",
        "heartbeat",
        "status",
        "log",
        "command_result",
        "task_progress",
        "task_result",
        "stream_chunk",
        "stream_end",
        *COORDINATION_TYPES,
    }
)

LEVELS: Final = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
