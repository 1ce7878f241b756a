"""The relay: messages to an agent's socket on whichever node holds it, and the events about
the agent that every watcher sees."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kai.agents.live import LiveAgents
from kai.db import utcnow
from kai.protocol.control import AgentClose, AgentSend
from kai.realtime.broker import Broker

log = logging.getLogger("kai.agents.relay")


class Relay:
    def __init__(self, live: LiveAgents, broker: Broker) -> None:
        self.live = live
        self.broker = broker
        self._tasks: set[asyncio.Task[None]] = set()
        # On the agent's node: for each command delivered here, the node waiting for its answer.
        # command id -> (the agent it went to, the node waiting for its answer)
        self.reply_to: dict[str, tuple[str, str]] = {}

    # -- to the agent ----------------------------------------------------------------------

    async def deliver(
        self,
        agent_id: str,
        message: dict[str, Any],
        *,
        restart: bool = False,
        origin: str | None = None,
    ) -> bool:
        """Send ``message`` to the agent's socket here or on its node; False if none holds it.

        ``origin`` is the node that waits for the answer to a ``command``.
        """
        if await self._deliver_here(agent_id, message, restart=restart, origin=origin):
            return True
        node = await self.broker.presence(agent_id)
        if node is None or node == self.broker.node_id:
            return False
        await self.broker.send_to_node(
            node,
            AgentSend(agent_id=agent_id, message=message, restart=restart, origin=origin).wire(),
        )
        return True

    async def _deliver_here(
        self, agent_id: str, message: dict[str, Any], *, restart: bool, origin: str | None
    ) -> bool:
        live = self.live.get(agent_id)
        if live is None or not live.ready or live.closing:
            return False
        if restart:
            live.restart_requested = True
        if origin is not None and "commandId" in message:
            self.reply_to[str(message["commandId"])] = (agent_id, origin)
        await live.send(message)
        return True

    def forget_agent(self, agent_id: str) -> None:
        """The agent's socket is gone: nobody here will answer its commands any more."""
        for command_id in [c for c, (a, _) in self.reply_to.items() if a == agent_id]:
            del self.reply_to[command_id]

    async def close(self, agent_id: str, code: int, reason: str) -> None:
        """Close the agent's socket wherever it is."""
        await self.broker.broadcast(AgentClose(agent_id=agent_id, code=code, reason=reason).wire())

    def close_soon(self, agent_id: str, code: int, reason: str) -> None:
        self.spawn(self.close(agent_id, code, reason))

    def close_owned_soon(self, owner_id: str, code: int, reason: str) -> None:
        """Close every socket of ``owner_id``'s agents, on every node."""
        self.spawn(
            self.broker.broadcast(AgentClose(owner_id=owner_id, code=code, reason=reason).wire())
        )

    def spawn(self, work: Any) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Let spawned work (kicks, closes) finish, for up to ``timeout`` s, before shutting
        down: a ``kai`` command's kick must leave before its broker closes."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def on_agent_send(self, sent: AgentSend) -> None:
        """Another node routed a message to an agent connected here."""
        delivered = await self._deliver_here(
            sent.agent_id, sent.message, restart=sent.restart, origin=sent.origin
        )
        if not delivered:
            log.warning("agent %s: routed message arrived after the agent left", sent.agent_id)

    async def on_agent_close(self, closing: AgentClose) -> None:
        if closing.owner_id is not None:
            lives = [live for live in self.live.all() if live.owner_id == closing.owner_id]
        elif closing.agent_id is not None:
            lives = [live] if (live := self.live.get(closing.agent_id)) is not None else []
        else:
            lives = []
        for live in lives:
            await live.close(closing.code, closing.reason)

    # -- to the watchers -------------------------------------------------------------------

    async def status(
        self,
        agent_id: str,
        *,
        status: str,
        health: str,
        message: str | None = None,
        at: datetime | None = None,
    ) -> None:
        await self.publish(
            agent_id,
            {
                "type": "status_update",
                "status": status,
                "health": health,
                "statusMessage": message,
                "timestamp": at or utcnow(),
            },
        )

    async def logs(self, agent_id: str, rows: Iterable[dict[str, Any]]) -> None:
        events = [
            {
                "type": "log_stream",
                "entry": {
                    "timestamp": row["timestamp"],
                    "level": row["level"],
                    "message": row["message"],
                    "logger": row["logger"],
                    "source": row["source"],
                    "extra": row["extra"],
                },
            }
            for row in rows
        ]
        try:
            await self.broker.publish_many(agent_id, events)
        except Exception:
            log.exception("agent %s: %d log events not published", agent_id, len(events))

    async def publish(self, agent_id: str, event: dict[str, Any]) -> None:
        try:
            await self.broker.publish(agent_id, event)
        except Exception:
            log.exception("agent %s: event %s not published", agent_id, event.get("type"))
