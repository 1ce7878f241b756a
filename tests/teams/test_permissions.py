"""Every role against every team and grant route, as the role matrix says (a ``user`` may,
an ``agent`` may not), each decision in the audit log."""

from __future__ import annotations

from typing import Any

from kai.auth import rbac
from tests.agents.support import HubServer, People, Person
from tests.helpers import assert_problem
from tests.teams.support import body, decisions

ROUTES = [
    ("GET", "/api/teams", None, "agents:read", 200),
    ("POST", "/api/teams", {"name": "team", "agentIds": ["{agent}"]}, "agents:update", 201),
    ("GET", "/api/teams/{team}", None, "agents:read", 200),
    ("PUT", "/api/teams/{team}", {"description": "d"}, "agents:update", 200),
    ("GET", "/api/agents/{agent}/grants", None, "agents:read", 200),
    (
        "POST",
        "/api/agents/{agent}/grants",
        {"targetTeamId": "{team}", "actions": ["task"]},
        "agents:update",
        201,
    ),
    ("DELETE", "/api/agents/{agent}/grants/{grant}", None, "agents:update", 200),
    ("DELETE", "/api/teams/{team}", None, "agents:update", 200),
]


def filled(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: filled(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, ids) for v in value]
    return value


async def test_every_role_against_every_team_and_grant_route(
    server: HubServer, people: People
) -> None:
    cast: dict[str, Person] = {"admin": await people.admin()}
    for role in ("user", "developer", "agent"):
        cast[role] = await people.join(f"{role}@example.com", role=role)
    called: list[tuple[str, str, str, bool]] = []  # user id, permission, resource, granted
    # The agent role cannot make agents: it aims at the user's (the answer is a 403 anyway).
    ids: dict[str, str] = {}
    for role in ("user", "developer", "admin", "agent"):
        person = cast[role]
        if role != "agent":
            ids = {"agent": (await person.create_agent(f"{role}-agent")).agent_id}
        for method, template, payload, permission, status in ROUTES:
            path = filled(template, ids)
            response = await person.call(method, path, json=filled(payload, ids))
            granted = rbac.allowed(role, permission)
            if granted:
                answer = body(response, status)
                if template == "/api/teams" and method == "POST":
                    ids["team"] = answer["id"]
                elif method == "POST":
                    ids["grant"] = answer["id"]
            else:
                assert_problem(response, 403, f"Insufficient permissions: {permission}")
            called.append((person.user_id, permission, f"{method} {path}", granted))
    assert {role: rbac.allowed(role, "agents:update") for role in cast} == {
        "admin": True,
        "user": True,
        "developer": True,
        "agent": False,
    }

    audited = {
        (d.user_id, d.permission, d.resource, d.granted)
        for d in await decisions(server.hub, "agents:")
    }
    for row in called:
        assert row in audited, row
