"""What the hub's nodes tell each other through the broker: typed control messages, each named
by its ``op``. A node parses each message once and hands it to the handler registered for its
class (``Wiring.on_control``); a message of an ``op`` it does not know (a newer node's) is left
alone."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel


class _Control(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The message as the broker carries it."""
        return self.model_dump(by_alias=True, exclude_none=True)


class Kick(_Control):
    """Close the client sockets of a session, a user or an agent's log, on every node."""

    op: Literal["kick"] = "kick"
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None  # the log watched: an agent's, or a team channel's
    code: int = 4001
    reason: str = "Session ended"


class AgentSend(_Control):
    """Deliver a message to an agent connected to the receiving node."""

    op: Literal["agent_send"] = "agent_send"
    agent_id: str
    message: dict[str, Any]
    restart: bool = False
    origin: str | None = None  # the node waiting for the answer to a command


class AgentClose(_Control):
    """Close an agent's socket, or every socket of an owner's agents."""

    op: Literal["agent_close"] = "agent_close"
    agent_id: str | None = None
    owner_id: str | None = None
    code: int = 1000
    reason: str = ""


class CommandAnswer(_Control):
    """An agent's answer to a command, for the node whose caller waits for it."""

    op: Literal["command_result"] = "command_result"
    answer: dict[str, Any]


class TaskWake(_Control):
    """Look at the agent's queue: a task may be waiting for it."""

    op: Literal["task_wake"] = "task_wake"
    agent_id: str


class StreamCancelled(_Control):
    op: Literal["stream_cancelled"] = "stream_cancelled"
    stream_id: str


class ConfigChanged(_Control):
    """Runtime settings changed: read them again."""

    op: Literal["config_changed"] = "config_changed"


class FeedsRecheck(_Control):
    """Close the feeds an owner's agents may no longer read (a team was changed or deleted)."""

    op: Literal["feeds_recheck"] = "feeds_recheck"
    owner_id: str
    team_id: str | None = None


AnyControl = Annotated[
    Kick
    | AgentSend
    | AgentClose
    | CommandAnswer
    | TaskWake
    | StreamCancelled
    | ConfigChanged
    | FeedsRecheck,
    Field(discriminator="op"),
]
CONTROL: TypeAdapter[AnyControl] = TypeAdapter(AnyControl)
CONTROL_OPS = frozenset(
    kind.model_fields["op"].default
    for kind in (
        Kick,
        AgentSend,
        AgentClose,
        CommandAnswer,
        TaskWake,
        StreamCancelled,
        ConfigChanged,
        FeedsRecheck,
    )
)
