"""Every role against every operations route, as the seed's matrix says, each decision
audited."""

from __future__ import annotations

from sqlalchemy import select

from kai.auth import rbac
from kai.auth.models import AuditEvent
from tests.agents.support import HubServer, People, Person
from tests.helpers import assert_problem

ROUTES = [
    ("GET", "/api/config", None, "config:read"),
    ("PUT", "/api/config", {"settings": {"commandTimeout": 10}}, "config:update"),
    ("GET", "/api/services", None, "services:read"),
    ("POST", "/api/services/task-dispatch/restart", None, "services:restart"),
    ("POST", "/api/services/stream-expiry/stop", None, "services:stop"),
]


async def test_every_role_against_every_operations_route(server: HubServer, people: People) -> None:
    cast: dict[str, Person] = {"admin": await people.admin()}
    for role in ("user", "developer", "agent"):
        cast[role] = await people.join(f"{role}@example.com", role=role)
    for role, person in cast.items():
        for method, path, body, permission in ROUTES:
            response = await person.call(method, path, json=body)
            if rbac.allowed(role, permission):
                assert response.status_code == 200, (role, path, response.text)
            else:
                assert_problem(response, 403, f"Insufficient permissions: {permission}")
        restarted = await cast["admin"].call("POST", "/api/services/stream-expiry/restart")
        assert restarted.status_code == 200, restarted.text

    await server.hub.audit.flush()
    async with server.hub.db.session(write=False) as session:
        decisions = {
            (row.user_id, row.permission, row.granted)
            for row in await session.scalars(
                select(AuditEvent).where(AuditEvent.kind == "permission")
            )
        }
    for role, person in cast.items():
        for _, _, _, permission in ROUTES:
            granted = rbac.allowed(role, permission)
            assert (person.user_id, permission, granted) in decisions, (role, permission)
