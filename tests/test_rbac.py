"""The role matrix: the seed's table, ``allowed()``, and every role against every permission
through real HTTP, with each decision in the audit log."""

# No `from __future__ import annotations` here: the probe routes' annotations name a local
# permission, and FastAPI must see them evaluated.

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from kai.app import create_app
from kai.auth.deps import Require
from kai.auth.rbac import MATRIX, PERMISSIONS, Role, allowed, permissions_of
from kai.auth.service import Principal
from kai.config import Settings
from tests.conftest import Serve
from tests.helpers import Api, assert_problem, bearer

# SecurityManager.createPermissionMatrix, copied from the seed (section IV) as written.
SEED_MATRIX: dict[str, dict[str, bool]] = {
    "user": {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": False,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": False,
    },
    "developer": {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": True,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": True,
        "services:read": True,
        "services:restart": True,
    },
    "agent": {
        "agents:read": False,
        "agents:create": False,
        "agents:update": False,
        "agents:delete": False,
        "agents:command": False,
        "files:upload": True,
        "config:read": False,
        "config:update": False,
    },
    "admin": {
        "agents:read": True,
        "agents:create": True,
        "agents:update": True,
        "agents:delete": True,
        "agents:command": True,
        "files:upload": True,
        "config:read": True,
        "config:update": True,
        "services:read": True,
        "services:restart": True,
        "services:stop": True,
        "system:admin": True,
    },
}
ROLES = ("user", "developer", "agent", "admin")
ALL_PERMISSIONS = sorted({p for row in SEED_MATRIX.values() for p in row})
PROBE = "/api/test/rbac"


def granted_in_seed(role: str, permission: str) -> bool:
    return SEED_MATRIX[role].get(permission, False)


# -- the matrix itself -------------------------------------------------------------------------


def test_matrix_is_the_seeds_matrix() -> None:
    assert {role.value: dict(row) for role, row in MATRIX.items()} == SEED_MATRIX
    assert [role.value for role in Role] == list(ROLES)
    assert sorted(PERMISSIONS) == ALL_PERMISSIONS
    assert len(ALL_PERMISSIONS) == 12


@pytest.mark.parametrize("role", ROLES)
def test_allowed_for_every_permission(role: str) -> None:
    for permission in ALL_PERMISSIONS:
        assert allowed(role, permission) is granted_in_seed(role, permission), (role, permission)
    expected = sorted(p for p in ALL_PERMISSIONS if granted_in_seed(role, permission=p))
    assert permissions_of(role) == expected


def test_unknown_roles_and_permissions_hold_nothing() -> None:
    assert not allowed("root", "agents:read")
    assert not allowed("", "agents:read")
    assert not allowed("Admin", "system:admin")
    assert not allowed("admin", "agents:launch")
    assert not allowed("user", "services:stop")
    assert permissions_of("root") == []


def test_require_refuses_an_unknown_permission() -> None:
    with pytest.raises(ValueError, match="unknown permission"):
        Require("agents:launch")


# -- every role against every permission, over HTTP ---------------------------------------------


def _probe(permission: str) -> Callable[..., Awaitable[dict[str, str]]]:
    async def probe(principal: Annotated[Principal, Require(permission)]) -> dict[str, str]:
        return {"permission": permission, "userId": principal.user_id, "role": principal.role}

    return probe


def _app_with_probes(settings: Settings) -> FastAPI:
    app = create_app(settings)
    router = APIRouter(prefix=PROBE)
    for permission in ALL_PERMISSIONS:
        router.add_api_route(f"/{permission}", _probe(permission), methods=["GET"])
    app.include_router(router)
    return app


@dataclass
class Cast:
    """One signed-in user per role."""

    client: httpx.AsyncClient
    tokens: dict[str, str]
    ids: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return bearer(self.tokens[role])


@pytest.fixture
async def cast(settings: Settings, serve: Serve) -> AsyncIterator[Cast]:
    async with serve(_app_with_probes(settings)) as started:
        client = started.client
        api = Api(client)
        admin = await api.admin_token()
        session = (await client.get("/api/auth/session", headers=bearer(admin))).json()
        tokens, ids = {"admin": admin}, {"admin": session["user"]["id"]}
        for role in ("user", "developer", "agent"):
            email = f"{role}@example.com"
            ids[role] = (await api.register(email))["user"]["id"]
            # Signed in before the change: a role applies to the very next request.
            tokens[role] = str((await api.login(email))["tokens"]["accessToken"]["token"])
            if role != "user":
                response = await client.put(
                    f"/api/users/{ids[role]}", json={"role": role}, headers=bearer(admin)
                )
                assert response.status_code == 200, response.text
                assert response.json()["user"]["role"] == role
        yield Cast(client, tokens, ids)


async def test_every_role_against_every_permission(cast: Cast) -> None:
    for role in ROLES:
        for permission in ALL_PERMISSIONS:
            response = await cast.client.get(f"{PROBE}/{permission}", headers=cast.auth(role))
            if granted_in_seed(role, permission):
                assert response.status_code == 200, (role, permission, response.text)
                assert response.json() == {
                    "permission": permission,
                    "userId": cast.ids[role],
                    "role": role,
                }
            else:
                assert_problem(response, 403, f"Insufficient permissions: {permission}")


async def test_no_token_is_401_not_403(cast: Cast) -> None:
    for permission in ALL_PERMISSIONS:
        response = await cast.client.get(f"{PROBE}/{permission}")
        assert_problem(response, 401, "Invalid or expired session")
        response = await cast.client.get(f"{PROBE}/{permission}", headers=bearer("forged"))
        assert_problem(response, 401, "Invalid or expired session")


async def test_session_lists_the_roles_permissions(cast: Cast) -> None:
    for role in ROLES:
        response = await cast.client.get("/api/auth/session", headers=cast.auth(role))
        assert response.status_code == 200
        body = response.json()
        assert body["user"]["role"] == role
        assert body["permissions"] == sorted(p for p in ALL_PERMISSIONS if granted_in_seed(role, p))


async def test_admin_routes_as_each_role(cast: Cast) -> None:
    target = cast.ids["user"]
    for role in ROLES:
        auth = cast.auth(role)
        users = await cast.client.get("/api/users", headers=auth)
        audit = await cast.client.get("/api/audit", headers=auth)
        update = await cast.client.put(
            f"/api/users/{target}", json={"name": "Renamed"}, headers=auth
        )
        if role == "admin":
            assert users.status_code == 200
            assert users.json()["total"] == 4
            assert audit.status_code == 200
            assert update.status_code == 200
            assert update.json()["updatedFields"] == ["name"]
        else:
            for response in (users, audit, update):
                assert_problem(response, 403, "Insufficient permissions: system:admin")
    # The denied update changed nothing.
    response = await cast.client.get("/api/users?q=user@", headers=cast.auth("admin"))
    assert [u["name"] for u in response.json()["users"]] == ["Renamed"]


async def _all_permission_events(cast: Cast) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        response = await cast.client.get(
            "/api/audit",
            params={"kind": "permission", "limit": 500, "offset": offset},
            headers=cast.auth("admin"),
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["events"])
        offset = page["nextOffset"]
    return events


async def test_every_decision_is_audited(cast: Cast) -> None:
    started = datetime.now(UTC)
    for role in ROLES:
        for permission in ALL_PERMISSIONS:
            await cast.client.get(f"{PROBE}/{permission}", headers=cast.auth(role))
    events = await _all_permission_events(cast)
    probes = [e for e in events if (e["resource"] or "").startswith(f"GET {PROBE}/")]
    assert len(probes) == len(ROLES) * len(ALL_PERMISSIONS)
    for role in ROLES:
        for permission in ALL_PERMISSIONS:
            rows = [
                e for e in probes if e["userId"] == cast.ids[role] and e["permission"] == permission
            ]
            assert len(rows) == 1, (role, permission, rows)
            row = rows[0]
            assert row["granted"] is granted_in_seed(role, permission)
            assert row["resource"] == f"GET {PROBE}/{permission}"
            assert row["kind"] == "permission"
            assert row["timestamp"].endswith("Z")
            when = datetime.fromisoformat(row["timestamp"])
            assert started <= when <= datetime.now(UTC)
    # Both outcomes are there, and the decision filter tells them apart.
    denied = await cast.client.get(
        "/api/audit",
        params={"userId": cast.ids["agent"], "permission": "agents:read", "decision": "denied"},
        headers=cast.auth("admin"),
    )
    assert denied.json()["total"] == 1
    assert denied.json()["events"][0]["granted"] is False
    granted = await cast.client.get(
        "/api/audit",
        params={"userId": cast.ids["agent"], "permission": "files:upload", "decision": "granted"},
        headers=cast.auth("admin"),
    )
    assert granted.json()["total"] == 1
    assert granted.json()["events"][0]["granted"] is True


async def test_admin_route_denials_are_audited(cast: Cast) -> None:
    await cast.client.get("/api/users", headers=cast.auth("developer"))
    response = await cast.client.get(
        "/api/audit",
        params={"userId": cast.ids["developer"], "permission": "system:admin"},
        headers=cast.auth("admin"),
    )
    events = response.json()["events"]
    assert [(e["granted"], e["resource"]) for e in events] == [(False, "GET /api/users")]
