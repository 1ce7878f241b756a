"""The agents connected to this node: their sockets and what is counted while they are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from kai.db import utcnow


class Channel(Protocol):
    """The agent's end of a socket, as the hub sees it."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(eq=False)
class LiveAgent:
    agent_id: str
    connection_id: str
    channel: Channel
    owner_id: str | None = None  # so that disabling the owner can find it
    connected_at: datetime = field(default_factory=utcnow)
    last_activity: datetime = field(default_factory=utcnow)
    messages_in: int = 0
    messages_out: int = 0
    flushed_in: int = 0  # how many of messages_in are already counted in the database
    flushed_out: int = 0
    ready: bool = False
    closing: bool = False
    restart_requested: bool = False
    # From the agent's hello: what work it takes.
    max_concurrency: int = 1
    commands: frozenset[str] = frozenset()
    task_types: frozenset[str] = frozenset()

    async def send(self, message: dict[str, Any]) -> None:
        self.messages_out += 1
        await self.channel.send(message)

    async def send_text(self, text: str) -> None:
        """Send a message already serialized as JSON text."""
        self.messages_out += 1
        await self.channel.send_text(text)

    def take_counts(self) -> tuple[int, int]:
        """Messages in and out since the last call, for adding to the stored totals."""
        delta = (self.messages_in - self.flushed_in, self.messages_out - self.flushed_out)
        self.flushed_in, self.flushed_out = self.messages_in, self.messages_out
        return delta

    def unflushed(self) -> tuple[int, int]:
        return self.messages_in - self.flushed_in, self.messages_out - self.flushed_out

    async def close(self, code: int, reason: str) -> None:
        self.closing = True
        await self.channel.close(code, reason)


class LiveAgents:
    """Which agents hold a socket on this node."""

    def __init__(self) -> None:
        self._live: dict[str, LiveAgent] = {}

    def __len__(self) -> int:
        return len(self._live)

    def get(self, agent_id: str) -> LiveAgent | None:
        return self._live.get(agent_id)

    def all(self) -> list[LiveAgent]:
        return list(self._live.values())

    def attach(self, live: LiveAgent) -> LiveAgent | None:
        """Make ``live`` the agent's connection; returns the one it replaces."""
        previous = self._live.get(live.agent_id)
        self._live[live.agent_id] = live
        return previous

    def detach(self, live: LiveAgent) -> bool:
        """Forget ``live`` if it is still the agent's connection."""
        if self._live.get(live.agent_id) is live:
            del self._live[live.agent_id]
            return True
        return False

    def mark_ready(self, live: LiveAgent) -> None:
        """The agent said hello on ``live``."""
        live.ready = True
