"""``/ws/agents/{agentId}``: people and apps watch (and later drive) one agent in real time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from kai.agents.service import Registry, Viewer
from kai.auth import rbac
from kai.auth.audit import AuditLog
from kai.auth.rbac import Role
from kai.auth.service import Identity, Principal
from kai.config import Settings
from kai.db import Database
from kai.errors import KaiError
from kai.kit.bounds import MAX_SEQ, json_problem
from kai.kit.ratelimit import Limiter
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.connection import ClientConnection, CloseCode, Who
from kai.realtime.handlers import BadMessage, Handlers
from kai.server import mark_authenticated

log = logging.getLogger("kai.realtime")
router = APIRouter()


class SocketServices(Protocol):
    """What a client socket uses, as the parts provided it to the connection's state."""

    settings: Settings
    db: Database
    identity: Identity
    audit: AuditLog
    agents: Registry
    broker: Broker
    clients: Clients
    handlers: Handlers
    limiter: Limiter


AUTH_TIMEOUT = 5.0


def origin_allowed(hub: SocketServices, origin: str | None) -> bool:
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


async def authenticate(hub: SocketServices, websocket: WebSocket) -> Principal | None:
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


async def admit(
    hub: SocketServices, websocket: WebSocket, *, log: str, path: str
) -> Principal | None:
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


def viewer_of(principal: Principal) -> Viewer:
    return Viewer(principal.user_id, principal.role == Role.ADMIN)


@router.websocket("/ws/agents/{agentId}")
async def client_socket(websocket: WebSocket, agentId: str) -> None:
    """Watch one agent: its status, logs and work, live and resumable (docs/websocket.md)."""
    hub = cast(SocketServices, websocket.state)
    settings = hub.settings
    principal = await admit(hub, websocket, log=f"agent:{agentId}", path=f"/ws/agents/{agentId}")
    if principal is None:
        return
    try:
        async with hub.db.session(write=False) as session:
            await hub.agents.visible(session, viewer_of(principal), agentId)
    except KaiError:
        await websocket.close(CloseCode.POLICY, "Access denied")
        return
    since, epoch = resume_point(websocket)
    who = Who(principal.user_id, principal.session_id, principal.role)
    del principal  # its ORM rows need not live as long as the connection
    conn = ClientConnection(
        websocket,
        who=who,
        agent_id=agentId,
        broker=hub.broker,
        status=lambda: hub.agents.status_event(agentId),
        max_queue=settings.ws_send_queue,
    )
    hub.clients.add(conn)
    try:
        await conn.start(since=since, epoch=epoch)
        await serve(hub, conn)
    finally:
        hub.clients.discard(conn)
        await conn.stop()


def resume_point(websocket: WebSocket) -> tuple[int | None, str | None]:
    raw = websocket.query_params.get("since")
    epoch = websocket.query_params.get("epoch") or None
    if raw is None:
        return None, epoch
    try:
        since = int(raw) if len(raw) <= 20 else -1
    except ValueError:
        return None, epoch
    return (since if 0 <= since <= MAX_SEQ else None), epoch


async def serve(
    hub: SocketServices, conn: ClientConnection, handlers: Handlers | None = None
) -> None:
    await conn.serve(lambda: _read(hub, conn, handlers or hub.handlers))


async def _read(hub: SocketServices, conn: ClientConnection, handlers: Handlers) -> None:
    settings = hub.settings
    limit = settings.ws_max_message_bytes
    while True:
        message = await conn.ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw: str | bytes = message.get("text") or message.get("bytes") or ""
        verdict = await hub.limiter.hit(
            f"ws:{conn.who.user_id}", capacity=settings.ws_rate_limit, per=settings.ws_rate_window
        )
        if not verdict.allowed:
            conn.send(
                {
                    "type": "error",
                    "error": "Rate limit exceeded",
                    "retryAfter": verdict.retry_after_seconds,
                }
            )
            continue
        size = len(raw) if isinstance(raw, bytes) or raw.isascii() else len(raw.encode())
        if size > limit:  # the limit is in bytes, not characters
            conn.send({"type": "error", "error": "Message too large", "maxBytes": limit})
            continue
        await _dispatch(handlers, conn, raw)


async def _dispatch(handlers: Handlers, conn: ClientConnection, raw: str | bytes) -> None:
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        conn.send({"type": "error", "error": "Invalid message format"})
        return
    problem = json_problem(data)
    if problem is not None:
        conn.send({"type": "error", "error": "Invalid message format", "details": problem})
        return
    handler = handlers.get(kind)
    if handler is None:
        conn.send({"type": "error", "error": f"Unknown message type: {kind[:100]}"})
        return
    try:
        await handler(conn, data)
    except BadMessage as exc:
        conn.send({"type": "error", "error": str(exc)})
    except Exception as exc:
        log.exception("client message %s failed", kind)
        conn.send(
            {"type": "error", "error": "Message handling failed", "details": type(exc).__name__}
        )
