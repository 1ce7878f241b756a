"""Wire models of teams and grants."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from kai.agents.schemas import Description, Name
from kai.kit.schemas import Body, Wire

Action = Literal["command", "task", "stream", "watch"]
AgentIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=500)
]


class CreateTeamRequest(Body):
    name: Annotated[Name, Field(examples=["research"])]
    description: Description | None = None
    agent_ids: AgentIds = Field(default_factory=list, description="Your agents in the team")


class UpdateTeamRequest(Body):
    name: Name | None = None
    description: Description | None = None
    agent_ids: AgentIds | None = Field(default=None, description="Replaces the members")


class TeamOut(Wire):
    id: str
    name: str
    description: str | None
    owner_id: str
    agent_ids: list[str]
    channel_url: str = Field(description="Watch the team's channel over this WebSocket path")
    created_at: datetime
    updated_at: datetime


class TeamsList(Wire):
    teams: list[TeamOut]
    total: int


class DeletedTeam(Wire):
    success: Literal[True] = True
    team_id: str


class CreateGrantRequest(Body):
    target_agent_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    target_team_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    actions: Annotated[list[Action], Field(min_length=1, max_length=4)]


class GrantOut(Wire):
    id: str
    agent_id: str
    target_agent_id: str | None
    target_team_id: str | None
    actions: list[Action]
    created_by: str | None
    created_at: datetime


class GrantsList(Wire):
    grants: list[GrantOut]
    total: int


class DeletedGrant(Wire):
    success: Literal[True] = True
    grant_id: str
