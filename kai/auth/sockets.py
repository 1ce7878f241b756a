"""Admitting a person's WebSocket: its origin, its token (a header or the first message) and
``agents:read``, each decision audited."""

from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

import orjson
from fastapi import WebSocket, WebSocketDisconnect

from kai.auth import rbac
from kai.auth.audit import AuditLog
from kai.auth.service import Identity, Principal
from kai.config import Settings
from kai.db import Database
from kai.errors import KaiError
from kai.realtime.connection import CloseCode
from kai.server import mark_authenticated


class Admission(Protocol):
    """What admitting a socket uses, as the parts provided it to the connection's state."""

    settings: Settings
    db: Database
    identity: Identity
    audit: AuditLog


AUTH_TIMEOUT = 5.0


def origin_allowed(hub: Admission, origin: str | None) -> bool:
    """No Origin (not a browser), the hub's own origin, or one on the allow-list."""
    if origin is None:
        return True
    allowed = hub.settings.ws_allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    own = urlsplit(hub.settings.base_url)
    return origin == f"{own.scheme}://{own.netloc}"


async def _first_message_token(websocket: WebSocket) -> str | None:
    try:
        message = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT)
        data = orjson.loads(message)
    except (TimeoutError, WebSocketDisconnect, orjson.JSONDecodeError, RuntimeError, KeyError):
        return None
    if isinstance(data, dict) and data.get("type") == "auth" and isinstance(data.get("token"), str):
        return str(data["token"])
    return None


async def authenticate(hub: Admission, websocket: WebSocket) -> Principal | None:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    if bearer is None:
        bearer = await _first_message_token(websocket)
    if bearer is None:
        return None
    try:
        async with hub.db.session(write=False) as session:
            return await hub.identity.authenticate(session, bearer)
    except KaiError:
        return None


async def admit(hub: Admission, websocket: WebSocket, *, log: str, path: str) -> Principal | None:
    """Accept the socket, then check its origin, its token and ``agents:read`` (audited).
    None, with the socket closed, when any of them fails."""
    await websocket.accept()
    if not origin_allowed(hub, websocket.headers.get("origin")):
        await websocket.close(CloseCode.POLICY, "Origin not allowed")
        return None
    principal = await authenticate(hub, websocket)
    client_ip = websocket.client.host if websocket.client else None
    if principal is None:
        hub.audit.auth("ws_connect", ok=False, client_ip=client_ip, resource=log)
        await websocket.close(CloseCode.POLICY, "Authentication failed")
        return None
    mark_authenticated(websocket.scope)
    granted = rbac.allowed(principal.role, "agents:read")
    hub.audit.permission(
        "agents:read",
        granted=granted,
        user_id=principal.user_id,
        resource=f"WS {path}",
        client_ip=client_ip,
    )
    if not granted:
        await websocket.close(CloseCode.POLICY, "Access denied")
        return None
    return principal
