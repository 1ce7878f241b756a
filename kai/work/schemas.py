"""Wire models of the work routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from kai.schemas import Body, Wire

CommandName = Annotated[str, Field(min_length=1, max_length=200, examples=["echo"])]


class CommandRequest(Body):
    command: CommandName
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"text": "hello"}])
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
