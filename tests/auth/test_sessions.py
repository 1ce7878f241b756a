"""Sessions over time: refresh rotation and reuse, logout, role changes, disabled users."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import update

from kai.auth.models import RefreshToken, Session
from kai.container import Container as Hub
from kai.db import utcnow
from tests.auth.support import (
    DEVELOPER_PERMISSIONS,
    USER_PERMISSIONS,
    access,
    refresh,
    session_row,
    session_status,
)
from tests.helpers import PASSWORD, Api, assert_problem, bearer, same_problem

REFRESH = "/api/auth/refresh"


async def rotate(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refreshToken": token})


async def test_refresh_rotates_and_spends_the_old_token(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    first = await rotate(client, refresh(login))
    assert first.status_code == 200, first.text
    second = await rotate(client, refresh(first.json()))
    assert second.status_code == 200, second.text
    assert len({refresh(login), refresh(first.json()), refresh(second.json())}) == 3
    assert second.json()["session"] == login["session"]
    assert await session_status(client, access(second.json())) == 200


async def test_reusing_a_spent_refresh_token_ends_the_session(
    api: Api, client: httpx.AsyncClient, hub: Hub
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    other = await api.login("ann@example.com")  # a second session of the same user
    rotated = (await rotate(client, refresh(login))).json()
    newest = (await rotate(client, refresh(rotated))).json()
    assert await session_status(client, access(newest)) == 200

    reuse = await rotate(client, refresh(login))
    assert_problem(reuse, 401)
    # Everything the session ever issued is dead: access tokens old and new, the newest refresh.
    for token in (access(login), access(rotated), access(newest)):
        assert await session_status(client, token) == 401
    assert_problem(await rotate(client, refresh(newest)), 401)
    assert_problem(await rotate(client, refresh(rotated)), 401)
    row = await session_row(hub, login["session"])
    assert row.revoked_at is not None
    assert row.revoked_reason == "refresh_reuse"
    # The user's other session is not the thief's and lives on.
    assert await session_status(client, access(other)) == 200
    assert (await rotate(client, refresh(other))).status_code == 200


async def test_concurrent_use_of_one_refresh_token_issues_once(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    answers = await asyncio.gather(*(rotate(client, refresh(login)) for _ in range(5)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 401, 401, 401, 401], [r.text for r in answers]
    # Two holders of one token is a reuse: the session is over for whoever won as well.
    for response in answers:
        if response.status_code == 200:
            assert await session_status(client, access(response.json())) == 401


async def test_an_expired_refresh_token_is_refused(
    api: Api, client: httpx.AsyncClient, hub: Hub
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    async with hub.db.session() as session:
        await session.execute(
            update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert_problem(await rotate(client, refresh(login)), 401)
    # An expired token is not a stolen one: the session itself goes on.
    assert await session_status(client, access(login)) == 200


async def test_an_expired_session_ends_its_access_and_refresh_tokens(
    api: Api, client: httpx.AsyncClient, hub: Hub
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    other = await api.login("ann@example.com")
    async with hub.db.session() as session:
        await session.execute(
            update(Session)
            .where(Session.id == login["session"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    # The access token itself has minutes left; its session does not.
    assert await session_status(client, access(login)) == 401
    assert_problem(await rotate(client, refresh(login)), 401)
    assert await session_status(client, access(other)) == 200


async def test_logout_ends_access_and_refresh_at_once(
    api: Api, client: httpx.AsyncClient, hub: Hub
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    rotated = (await rotate(client, refresh(login))).json()
    other = await api.login("ann@example.com")
    response = await client.post("/api/auth/logout", headers=bearer(access(rotated)))
    assert response.status_code == 200, response.text
    assert await session_status(client, access(rotated)) == 401
    assert await session_status(client, access(login)) == 401
    assert_problem(await rotate(client, refresh(rotated)), 401)
    row = await session_row(hub, login["session"])
    assert row.revoked_reason == "logout"
    # Only that session ended.
    assert await session_status(client, access(other)) == 200


async def test_a_role_change_applies_to_the_next_request(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    before = await client.get("/api/auth/session", headers=bearer(access(login)))
    assert before.json()["permissions"] == USER_PERMISSIONS
    assert before.json()["user"]["role"] == "user"

    admin = await api.admin_token()
    changed = await client.put(
        f"/api/users/{login['user']['id']}", json={"role": "developer"}, headers=bearer(admin)
    )
    assert changed.status_code == 200, changed.text
    after = await client.get("/api/auth/session", headers=bearer(access(login)))
    assert after.status_code == 200
    assert after.json()["user"]["role"] == "developer"
    assert after.json()["permissions"] == DEVELOPER_PERMISSIONS
    # The same session, not a new one: the token did not change, the role behind it did.
    assert after.json()["session"]["id"] == login["session"]

    back = await client.put(
        f"/api/users/{login['user']['id']}", json={"role": "user"}, headers=bearer(admin)
    )
    assert back.status_code == 200, back.text
    again = await client.get("/api/auth/session", headers=bearer(access(login)))
    assert again.json()["permissions"] == USER_PERMISSIONS


async def test_a_user_cannot_change_their_own_role(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    response = await client.put(
        f"/api/users/{login['user']['id']}", json={"role": "admin"}, headers=bearer(access(login))
    )
    assert_problem(response, 403, "Insufficient permissions: system:admin")
    session = await client.get("/api/auth/session", headers=bearer(access(login)))
    assert session.json()["user"]["role"] == "user"


async def test_disabling_a_user_ends_their_sessions_and_logins(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    first = await api.login("ann@example.com")
    second = await api.login("ann@example.com")
    admin = await api.admin_token()
    user_id = first["user"]["id"]
    disabled = await client.put(
        f"/api/users/{user_id}", json={"disabled": True}, headers=bearer(admin)
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["user"]["disabled"] is True

    for login in (first, second):
        assert await session_status(client, access(login)) == 401
        assert_problem(await rotate(client, refresh(login)), 401)
        logout = await client.post("/api/auth/logout", headers=bearer(access(login)))
        assert_problem(logout, 401)
    refused = await client.post(
        "/api/auth/login", json={"credentials": {"email": "ann@example.com", "password": PASSWORD}}
    )
    unknown = await client.post(
        "/api/auth/login", json={"credentials": {"email": "zed@example.com", "password": PASSWORD}}
    )
    assert_problem(refused, 401, "Authentication failed")
    assert same_problem(refused, unknown)

    enabled = await client.put(
        f"/api/users/{user_id}", json={"disabled": False}, headers=bearer(admin)
    )
    assert enabled.status_code == 200, enabled.text
    back = await api.login("ann@example.com")
    assert await session_status(client, access(back)) == 200
    # Enabling the account again does not bring the old sessions back.
    assert await session_status(client, access(first)) == 401
