"""Serving a person's WebSocket once admitted: where it resumes, and every message it sends,
rate-limited, size-checked and dispatched to the handler of its type."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson
from fastapi import WebSocket

from kai.config import Settings
from kai.kit.ratelimit import Limiter
from kai.protocol.bounds import MAX_SEQ, json_problem
from kai.realtime.connection import ClientConnection
from kai.realtime.handlers import BadMessage, Handlers

log = logging.getLogger("kai.realtime")


class Serving(Protocol):
    """What serving a socket uses, as the parts provided it to the connection's state."""

    settings: Settings
    limiter: Limiter
    handlers: Handlers


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
    hub: Serving, conn: ClientConnection, websocket: WebSocket, handlers: Handlers | None = None
) -> None:
    """Read the person's messages until they leave (the connection writes its events)."""
    await conn.serve(lambda: _read(hub, conn, websocket, handlers or hub.handlers))


async def _read(
    hub: Serving, conn: ClientConnection, websocket: WebSocket, handlers: Handlers
) -> None:
    settings = hub.settings
    limit = settings.ws_max_message_bytes
    while True:
        message = await websocket.receive()
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
