"""The client connections on this node, so that a logout or a deletion can close them."""

from __future__ import annotations

from kai.protocol.control import Kick
from kai.realtime.connection import ClientConnection, CloseCode


class Clients:
    def __init__(self) -> None:
        self._all: set[ClientConnection] = set()

    def __len__(self) -> int:
        return len(self._all)

    def add(self, connection: ClientConnection) -> None:
        self._all.add(connection)

    def discard(self, connection: ClientConnection) -> None:
        self._all.discard(connection)

    def kick(
        self,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        code: int,
        reason: str,
    ) -> int:
        """Close every connection matching all the given fields; returns how many."""
        hit = 0
        for conn in list(self._all):
            if session_id is not None and conn.who.session_id != session_id:
                continue
            if user_id is not None and conn.who.user_id != user_id:
                continue
            if agent_id is not None and conn.agent_id != agent_id:
                continue
            conn.close_soon(code, reason)
            hit += 1
        return hit

    def close_all(self) -> None:
        for conn in list(self._all):
            conn.close_soon(CloseCode.GOING_AWAY, "Hub shutting down")

    async def on_kick(self, message: Kick) -> None:
        """A kick from any node: close the sockets of that session, user or log here."""
        self.kick(
            session_id=message.session_id,
            user_id=message.user_id,
            agent_id=message.agent_id,
            code=message.code,
            reason=message.reason,
        )
