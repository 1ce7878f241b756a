"""Helpers of the auth tests: wire shapes, mail parsing, token forging, the hub from inside."""

from __future__ import annotations

import base64
import json
import re
import time
import warnings
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import httpx
import jwt
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import select

from kai.auth.models import Session, User
from kai.container import Container as Hub
from tests.conftest import TEST_SECRET

USER_KEYS = {"id", "email", "name", "role", "emailVerified", "createdAt"}
TOKEN_KEYS = {"token", "expiresAt"}
SESSION_KEYS = {"id", "createdAt", "expiresAt"}
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
MAGIC_LINK = re.compile(r"http://hub\.test/login/magic#token=([A-Za-z0-9_-]{20,})")

# The seed's permission matrix, rows as granted: what GET /api/auth/session must list.
USER_PERMISSIONS = [
    "agents:command",
    "agents:create",
    "agents:read",
    "agents:update",
    "config:read",
    "files:upload",
]
DEVELOPER_PERMISSIONS = [
    "agents:command",
    "agents:create",
    "agents:delete",
    "agents:read",
    "agents:update",
    "config:read",
    "config:update",
    "files:upload",
    "services:read",
    "services:restart",
]


def utc_time(value: Any) -> datetime:
    """A wire time: an ISO-8601 string in UTC ending in ``Z``."""
    assert isinstance(value, str), value
    assert UTC_TIME.match(value), f"not a UTC time with a Z suffix: {value!r}"
    return datetime.fromisoformat(value)


def assert_user(user: Any, *, email: str, role: str = "user", verified: bool = False) -> None:
    """``user`` is exactly the contract's user object, with no hash and nothing else."""
    assert isinstance(user, dict)
    assert set(user) == USER_KEYS, user
    assert isinstance(user["id"], str)
    assert user["id"]
    assert user["email"] == email
    assert user["role"] == role
    assert user["emailVerified"] is verified
    assert user["name"] is None or isinstance(user["name"], str)
    assert utc_time(user["createdAt"]) <= datetime.now(UTC)


def assert_tokens(tokens: Any) -> None:
    """``tokens`` is ``{"accessToken": {token, expiresAt}, "refreshToken": {token, expiresAt}}``."""
    assert isinstance(tokens, dict)
    assert set(tokens) == {"accessToken", "refreshToken"}, tokens
    now = datetime.now(UTC)
    for kind in ("accessToken", "refreshToken"):
        assert set(tokens[kind]) == TOKEN_KEYS, tokens[kind]
        assert isinstance(tokens[kind]["token"], str)
        assert len(tokens[kind]["token"]) >= 32
        assert utc_time(tokens[kind]["expiresAt"]) > now
    assert tokens["accessToken"]["token"] != tokens["refreshToken"]["token"]
    access_expires = utc_time(tokens["accessToken"]["expiresAt"])
    assert access_expires <= utc_time(tokens["refreshToken"]["expiresAt"])


def access(body: dict[str, Any]) -> str:
    return str(body["tokens"]["accessToken"]["token"])


def refresh(body: dict[str, Any]) -> str:
    return str(body["tokens"]["refreshToken"]["token"])


def mail_text(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes), message
    return payload.decode()


def magic_token(message: Message) -> str:
    """The token of the sign-in link in a mail."""
    found = MAGIC_LINK.findall(mail_text(message))
    assert len(found) == 1, mail_text(message)
    return str(found[0])


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    """A real access token's claims, checked with the test key."""
    claims: dict[str, Any] = jwt.decode(
        token, TEST_SECRET, algorithms=["HS256"], audience="kai:access", issuer="kai"
    )
    return claims


def forge(claims: dict[str, Any], *, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    """A JWT with ``claims``; ``algorithm="none"`` gives an unsigned one."""
    if algorithm == "none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with warnings.catch_warnings():
        # The test key is shorter than HS512 asks for; a forger does not care.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def fresh_claims(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with a new ``iat``/``exp`` window and ``changes``; a value of None drops it."""
    now = int(time.time())
    claims = {**base, "iat": now, "exp": now + 600, **changes}
    return {k: v for k, v in claims.items() if v is not None}


async def session_status(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/api/auth/session", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def user_row(hub: Hub, email: str) -> User:
    async with hub.db.session(write=False) as session:
        user = await session.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


async def session_row(hub: Hub, session_id: str) -> Session:
    async with hub.db.session(write=False) as session:
        row = await session.get(Session, session_id)
    assert row is not None
    return row
