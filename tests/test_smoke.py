from __future__ import annotations

import httpx

from tests.helpers import Api, bearer


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.json()["status"] == "ok"


async def test_login_and_session(api: Api, client: httpx.AsyncClient) -> None:
    token = await api.user_token("ann@example.com")
    response = await client.get("/api/auth/session", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["email"] == "ann@example.com"
    assert "agents:read" in body["permissions"]
