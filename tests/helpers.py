"""Small helpers for driving the hub's API in tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, detail: str | None = None) -> None:
    """The response is problem+json with ``status`` (and ``detail``, when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    if detail is not None:
        assert body["detail"] == detail, body


@dataclass
class Api:
    client: httpx.AsyncClient

    async def register(self, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/register",
            json={"userData": {"email": email, "password": password, **extra}},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/login", json={"credentials": {"email": email, "password": password}}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def user_token(self, email: str, password: str = PASSWORD) -> str:
        """Register ``email`` and return an access token for it."""
        await self.register(email, password)
        return str((await self.login(email, password))["tokens"]["accessToken"]["token"])

    async def admin_token(self) -> str:
        body = await self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        return str(body["tokens"]["accessToken"]["token"])


def same_problem(a: httpx.Response, b: httpx.Response) -> bool:
    """Two answers carry the same problem (each request has its own ``requestId``)."""

    def without_id(response: httpx.Response) -> dict[str, object]:
        body: dict[str, object] = response.json()
        body.pop("requestId", None)
        return body

    return without_id(a) == without_id(b)
