"""Your own account: change your password (ending your other sessions), list your sessions,
end one of them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.auth.support import access, refresh, session_status, utc_time
from tests.helpers import PASSWORD, Api, assert_problem, bearer

NEW = "a brand new passphrase"


async def login(
    client: httpx.AsyncClient, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    return await client.post(
        "/api/auth/login",
        json={"credentials": {"email": "ann@example.com", "password": password}},
        headers=headers,
    )


async def change(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/api/auth/password", json=body, headers=bearer(token))


async def test_changing_the_password_ends_the_other_sessions(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    here = (await login(client)).json()
    elsewhere = (await login(client)).json()
    response = await change(client, access(here), {"currentPassword": PASSWORD, "newPassword": NEW})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "message": "Password changed", "sessionsEnded": 1}
    # This session goes on; the other one is dead, its refresh token too.
    assert await session_status(client, access(here)) == 200
    assert await session_status(client, access(elsewhere)) == 401
    stale = await client.post("/api/auth/refresh", json={"refreshToken": refresh(elsewhere)})
    assert_problem(stale, 401)
    assert (
        await client.post("/api/auth/refresh", json={"refreshToken": refresh(here)})
    ).status_code == 200
    assert_problem(await login(client), 401)
    assert (await login(client, NEW)).status_code == 200


async def test_the_current_password_is_needed(api: Api, client: httpx.AsyncClient) -> None:
    token = await api.user_token("ann@example.com")
    missing = await change(client, token, {"newPassword": NEW})
    assert_problem(missing, 403, "The current password is not right")
    wrong = await change(client, token, {"currentPassword": "not it at all", "newPassword": NEW})
    assert_problem(wrong, 403, "The current password is not right")
    common = await change(client, token, {"currentPassword": PASSWORD, "newPassword": "password"})
    assert_problem(common, 422)
    assert common.json()["errors"] == [
        {
            "field": "newPassword",
            "message": "Password is on the list of commonly used passwords",
            "rule": "common",
        }
    ]
    # Nothing changed, and the session lives.
    assert (await login(client)).status_code == 200
    assert await session_status(client, token) == 200
    assert_problem(await client.post("/api/auth/password", json={"newPassword": NEW}), 401)


async def test_sessions_are_listed_and_one_can_be_ended(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    first = (await login(client, **{"User-Agent": "ann-laptop/1.0"})).json()
    second = (await login(client, **{"User-Agent": "ann-phone/2.0"})).json()
    response = await client.get("/api/auth/sessions", headers=bearer(access(second)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == 2
    newest, oldest = body["sessions"]
    assert set(newest) == {
        "id",
        "createdAt",
        "expiresAt",
        "lastUsedAt",
        "clientIp",
        "userAgent",
        "current",
    }
    assert (newest["id"], newest["current"], newest["userAgent"]) == (
        second["session"],
        True,
        "ann-phone/2.0",
    )
    assert (oldest["id"], oldest["current"], oldest["userAgent"]) == (
        first["session"],
        False,
        "ann-laptop/1.0",
    )
    assert newest["clientIp"] == "127.0.0.1"
    assert utc_time(newest["lastUsedAt"]) >= utc_time(newest["createdAt"])

    ended = await client.delete(
        f"/api/auth/sessions/{first['session']}", headers=bearer(access(second))
    )
    assert ended.status_code == 200, ended.text
    assert ended.json() == {"success": True, "sessionId": first["session"]}
    assert await session_status(client, access(first)) == 401
    refreshed = await client.post("/api/auth/refresh", json={"refreshToken": refresh(first)})
    assert_problem(refreshed, 401)
    listed = (await client.get("/api/auth/sessions", headers=bearer(access(second)))).json()
    assert [s["id"] for s in listed["sessions"]] == [second["session"]]
    again = await client.delete(
        f"/api/auth/sessions/{first['session']}", headers=bearer(access(second))
    )
    assert_problem(again, 404)


async def test_someone_elses_session_is_not_found(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    ann = (await login(client)).json()
    bob = await api.user_token("bob@example.com")
    response = await client.delete(f"/api/auth/sessions/{ann['session']}", headers=bearer(bob))
    assert_problem(response, 404, "Session not found")
    assert await session_status(client, access(ann)) == 200
    bobs = (await client.get("/api/auth/sessions", headers=bearer(bob))).json()
    assert ann["session"] not in [s["id"] for s in bobs["sessions"]]
