"""What the parts above the agents part do with an agent's messages: one handler per message
class, and hooks for an agent becoming ready, renewing its presence and leaving.

The agent socket handles the messages about the agent itself (hello, heartbeat, status, logs)
and hands every other message to the handler its class was registered with; the work part
registers results, task updates and stream chunks, the teams part the peer messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from kai.agents.live import LiveAgent

M = TypeVar("M")
Handler = Callable[[LiveAgent, Any], Awaitable[None]]
Hook = Callable[[LiveAgent], Awaitable[None]]
# Told whether the connection that left was still the agent's connection on this node.
LeftHook = Callable[[LiveAgent, bool], Awaitable[None]]


class AgentMessages:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], Handler] = {}
        self.ready: list[Hook] = []
        self.renewed: list[Hook] = []
        self.left: list[LeftHook] = []

    def handle(self, kind: type[M], handler: Callable[[LiveAgent, M], Awaitable[None]]) -> None:
        if kind in self._handlers:
            raise ValueError(f"{kind.__name__} already has a handler")
        self._handlers[kind] = handler

    def handle_each(self, kinds: Iterable[type[Any]], handler: Handler) -> None:
        """One handler for several message classes (it tells them apart itself)."""
        for kind in kinds:
            self.handle(kind, handler)

    def handler(self, message: object) -> Handler | None:
        return self._handlers.get(type(message))

    def on_ready(self, hook: Hook) -> None:
        """Run once the agent's hello is accepted and it is announced online."""
        self.ready.append(hook)

    def on_renewed(self, hook: Hook) -> None:
        """Run on every heartbeat that renewed the agent's presence."""
        self.renewed.append(hook)

    def on_left(self, hook: LeftHook) -> None:
        """Run when the connection ends (each hook's failure is logged, never skips the next)."""
        self.left.append(hook)
