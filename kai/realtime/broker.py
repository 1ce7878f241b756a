"""The broker: per-agent event logs, fan-out, presence, routing and kicks.

``MemoryBroker`` serves one process; ``RedisBroker`` (``kai.realtime.redis_broker``) serves
many nodes with the same interface.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from kai.kit.counters import COUNTS
from kai.realtime.events import Event, new_epoch, stamp

Listener = Callable[[Event], None]
YIELD_EVERY = 16  # events published in a row before the watchers' writers get a turn
Handler = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Window:
    """How much of each agent's event log is kept for replay."""

    count: int
    age: float  # seconds


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer to "what happened after ``since``": the events, or None when they are gone."""

    epoch: str
    head: int
    events: list[Event] | None


class Broker(Protocol):
    node_id: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(self, agent_id: str, event: dict[str, Any]) -> Event | None:
        """Append ``event`` to the agent's log and deliver it to every watcher on every node.

        None when the event is held back (the broker is unreachable) to go out later, in order.
        """
        ...

    async def publish_many(self, agent_id: str, events: list[dict[str, Any]]) -> None:
        """``publish`` each of ``events``, in order (in one round trip where that helps)."""
        ...

    async def replay(self, agent_id: str, *, since: int, epoch: str | None) -> Replay: ...

    async def head(self, agent_id: str) -> tuple[str, int]:
        """The log's epoch and its last seq (0 if empty)."""
        ...

    async def subscribe(self, agent_id: str, listener: Listener) -> None: ...

    async def unsubscribe(self, agent_id: str, listener: Listener) -> None: ...

    async def set_presence(self, agent_id: str, *, ttl: float) -> None: ...

    async def clear_presence(self, agent_id: str) -> None: ...

    async def presence(self, agent_id: str) -> str | None:
        """The node holding the agent's socket, if any."""
        ...

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> None: ...

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Deliver a control message to every node (this one included)."""
        ...

    def on_message(self, handler: Handler) -> None:
        """Handle messages sent to this node and broadcasts."""
        ...

    async def forget(self, agent_id: str) -> None:
        """Drop the agent's log (it was deleted)."""
        ...


@dataclass
class _Log:
    epoch: str = field(default_factory=new_epoch)
    seq: int = 0
    entries: deque[Event] = field(default_factory=deque)


class MemoryBroker:
    """The broker of a single process: everything lives in this process's memory."""

    def __init__(self, *, node_id: str, window: Window) -> None:
        self.node_id = node_id
        self.window = window
        self._logs: dict[str, _Log] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._presence: dict[str, tuple[str, float]] = {}
        self._handlers: list[Handler] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._since_yield = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def ping(self) -> None:
        return None

    def _log(self, agent_id: str) -> _Log:
        log = self._logs.get(agent_id)
        if log is None:
            log = self._logs[agent_id] = _Log()
        return log

    def _trim(self, log: _Log) -> None:
        oldest = time.time() - self.window.age
        while log.entries and (len(log.entries) > self.window.count or log.entries[0].at < oldest):
            log.entries.popleft()

    async def publish(self, agent_id: str, event: dict[str, Any]) -> Event | None:
        log = self._log(agent_id)
        log.seq += 1
        COUNTS.events_published += 1
        stamped = stamp(agent_id, event, seq=log.seq, epoch=log.epoch)
        log.entries.append(stamped)
        self._trim(log)
        for listener in list(self._listeners.get(agent_id, ())):
            listener(stamped)
        # Give the watchers' writers a turn now and then, as round trips to Redis do: a burst
        # (a batch of 500 log records) must not fill the send queue of a client that reads
        # promptly, yet waking every writer for every event would cost most of the fan-out.
        self._since_yield += 1
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            await asyncio.sleep(0)
        return stamped

    async def publish_many(self, agent_id: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self.publish(agent_id, event)

    async def replay(self, agent_id: str, *, since: int, epoch: str | None) -> Replay:
        log = self._log(agent_id)
        self._trim(log)
        if epoch is not None and epoch != log.epoch:
            return Replay(log.epoch, log.seq, None)
        if since > log.seq:
            return Replay(log.epoch, log.seq, None)
        first = log.entries[0].seq if log.entries else log.seq + 1
        if since + 1 < first:
            return Replay(log.epoch, log.seq, None)
        return Replay(log.epoch, log.seq, [e for e in log.entries if e.seq > since])

    async def head(self, agent_id: str) -> tuple[str, int]:
        log = self._log(agent_id)
        return log.epoch, log.seq

    async def subscribe(self, agent_id: str, listener: Listener) -> None:
        self._listeners.setdefault(agent_id, []).append(listener)

    async def unsubscribe(self, agent_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(agent_id)
        if listeners and listener in listeners:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[agent_id]

    async def set_presence(self, agent_id: str, *, ttl: float) -> None:
        self._presence[agent_id] = (self.node_id, time.monotonic() + ttl)

    async def clear_presence(self, agent_id: str) -> None:
        held = self._presence.get(agent_id)
        if held is not None and held[0] == self.node_id:
            del self._presence[agent_id]

    async def presence(self, agent_id: str) -> str | None:
        held = self._presence.get(agent_id)
        if held is None or held[1] < time.monotonic():
            return None
        return held[0]

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> None:
        if node_id == self.node_id:
            self._dispatch(message)

    async def broadcast(self, message: dict[str, Any]) -> None:
        self._dispatch(message)

    def on_message(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def _dispatch(self, message: dict[str, Any]) -> None:
        for handler in self._handlers:
            task = asyncio.get_running_loop().create_task(handler(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def forget(self, agent_id: str) -> None:
        self._logs.pop(agent_id, None)
