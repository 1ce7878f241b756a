"""What a client may send on ``/ws/agents/{agentId}``: a registry of handlers by type.

Other domains add theirs with ``register`` (commands, uploads and streams plug in here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kai.db import utcnow
from kai.protocol.bounds import MAX_SEQ
from kai.realtime.connection import ClientConnection

Handler = Callable[[ClientConnection, dict[str, Any]], Awaitable[None]]


class Handlers:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, message_type: str, handler: Handler) -> None:
        if message_type in self._handlers:
            raise ValueError(f"a handler for {message_type!r} is registered already")
        self._handlers[message_type] = handler

    def get(self, message_type: str) -> Handler | None:
        return self._handlers.get(message_type)

    def __len__(self) -> int:
        return len(self._handlers)

    @property
    def types(self) -> list[str]:
        return sorted(self._handlers)


class BadMessage(Exception):
    """A handler's refusal, sent to the client as an ``error`` with this text."""


async def heartbeat(conn: ClientConnection, message: dict[str, Any]) -> None:
    conn.send({"type": "heartbeat", "timestamp": utcnow()})


async def status_update(conn: ClientConnection, message: dict[str, Any]) -> None:
    raise BadMessage("Status updates are read-only")


async def already_authenticated(conn: ClientConnection, message: dict[str, Any]) -> None:
    raise BadMessage("Already authenticated")


async def resume(conn: ClientConnection, message: dict[str, Any]) -> None:
    since = message.get("since")
    epoch = message.get("epoch")
    if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_SEQ:
        raise BadMessage(f"resume needs since: a seq number from 0 to {MAX_SEQ}")
    if epoch is not None and not isinstance(epoch, str):
        raise BadMessage("epoch must be a string")
    await conn.resume(since=since, epoch=epoch)


def default_handlers() -> Handlers:
    handlers = Handlers()
    handlers.register("heartbeat", heartbeat)
    handlers.register("status_update", status_update)
    handlers.register("auth", already_authenticated)
    handlers.register("resume", resume)
    return handlers
