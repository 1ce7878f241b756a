"""One client WebSocket watching one agent: a gap-free cursor and a bounded send queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketState

from kai.realtime.broker import Broker
from kai.realtime.events import Event, dumps

log = logging.getLogger("kai.realtime.connection")


class CloseCode:
    """Close codes of the client WebSocket; docs/websocket.md says what a client should do."""

    GOING_AWAY: Final = 1001  # the hub is shutting down: reconnect with backoff and resume
    POLICY: Final = 1008  # authentication failed, access denied, origin not allowed: give up
    SERVER_ERROR: Final = 1011  # reconnect with backoff and resume
    SESSION_ENDED: Final = 4001  # logout, revoked or disabled: refresh or log in, reconnect
    ACCESS_REVOKED: Final = 4003  # the user may no longer read this agent: give up
    AGENT_DELETED: Final = 4004  # give up
    SLOW_CONSUMER: Final = 4008  # the client did not keep up: reconnect with ?since=last seq


@dataclass(frozen=True, slots=True)
class Who:
    user_id: str
    session_id: str
    role: str


StatusSource = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _Resync:
    """A break in the stream, queued in its place: the client carries on from this point."""

    epoch: str
    seq: int


class ClientConnection:
    """Queues what one client must receive and writes it out as fast as the client reads.

    Events of the agent arrive from the broker in ``seq`` order; the cursor drops duplicates
    and turns anything it cannot continue (a new epoch, a gap) into ``resync_required``. The
    queue is bounded: a client that stops reading is closed with 4008 instead of growing memory.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        who: Who,
        agent_id: str,
        broker: Broker,
        status: StatusSource,
        max_queue: int,
    ) -> None:
        self.ws = websocket
        self.who = who
        self.agent_id = agent_id
        self.broker = broker
        self.status = status
        self.max_queue = max_queue
        self.epoch = ""
        self.seq = 0
        self._queue: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._buffer: list[Event] | None = None
        self._closing: tuple[int, str] | None = None
        self._done = asyncio.Event()
        self.sent = 0
        self.dropped = False

    # -- the cursor ----------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Broker listener: runs for every event of the agent, in order."""
        if self._buffer is not None:
            self._buffer.append(event)
        else:
            self._accept(event)

    def _accept(self, event: Event) -> None:
        if event.epoch != self.epoch:
            self.epoch, self.seq = event.epoch, event.seq
            self._put(_Resync(self.epoch, self.seq))
            return
        if event.seq <= self.seq:
            return
        if event.seq != self.seq + 1:
            self.seq = event.seq
            self._put(_Resync(self.epoch, self.seq))
            return
        self.seq = event.seq
        self._put(event.text)

    async def start(self, *, since: int | None, epoch: str | None) -> None:
        """Subscribe, send the current status, and replay from ``since`` when asked."""
        self._buffer = []
        await self.broker.subscribe(self.agent_id, self.on_event)
        await self._position(since=since, epoch=epoch)

    async def resume(self, *, since: int, epoch: str | None) -> None:
        """Start over from ``since`` on this connection (the ``resume`` message)."""
        self._buffer = []
        self._queue.clear()
        await self._position(since=since, epoch=epoch)

    async def _position(self, *, since: int | None, epoch: str | None) -> None:
        try:
            if since is None:
                # The head first: a change after it arrives as an event, after the snapshot.
                self.epoch, self.seq = await self.broker.head(self.agent_id)
                self._put(self._status_text(await self.status(), snapshot=True))
                return
            status = await self.status()

            replay = await self.broker.replay(self.agent_id, since=since, epoch=epoch)
            self.epoch = replay.epoch
            if replay.events is None:
                self.seq = replay.head
                self._put(
                    self._resync_text(
                        status,
                        "Events after that seq are no longer held"
                        if epoch in (None, replay.epoch)
                        else "The event log was restarted",
                    )
                )
                return
            self.seq = since
            self._put(self._status_text(status, snapshot=True))
            for event in replay.events:
                self._accept(event)
        finally:
            buffered, self._buffer = self._buffer or [], None
            for event in buffered:
                self._accept(event)

    def _status_text(self, status: dict[str, Any], *, snapshot: bool) -> str:
        return dumps(
            {
                **status,
                "type": "status_update",
                "agentId": self.agent_id,
                "seq": self.seq,
                "epoch": self.epoch,
                "snapshot": snapshot,
            }
        )

    def _resync_text(self, status: dict[str, Any], reason: str, at: _Resync | None = None) -> str:
        epoch, seq = (at.epoch, at.seq) if at is not None else (self.epoch, self.seq)
        current = {
            **status,
            "type": "status_update",
            "agentId": self.agent_id,
            "seq": seq,
            "epoch": epoch,
        }
        return dumps(
            {
                "type": "resync_required",
                "agentId": self.agent_id,
                "seq": seq,
                "epoch": epoch,
                "reason": reason,
                "status": current,
            }
        )

    # -- sending -------------------------------------------------------------------------------

    def _put(self, item: Any) -> None:
        if self._closing is not None:
            return
        self._queue.append(item)
        self._wake.set()
        if len(self._queue) > self.max_queue:
            self.dropped = True
            self._queue.clear()
            self.close_soon(CloseCode.SLOW_CONSUMER, "Slow consumer: resume with ?since")

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message that is not an agent event (answers, errors)."""
        self._put(dumps(message))

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
            self._wake.set()

    @property
    def closing(self) -> bool:
        return self._closing is not None

    async def writer(self) -> None:
        """Write the queue out until the connection closes."""
        ws = self.ws
        while True:
            while self._queue and self._closing is None:
                item = self._queue.popleft()
                if isinstance(item, _Resync):
                    # Where the break was, not where the cursor is now: events after it are
                    # queued behind this message already.
                    item = self._resync_text(await self.status(), "The event stream broke", item)
                await ws.send_text(item)
                self.sent += 1
            if self._closing is not None:
                await self._close(*self._closing)
                return
            self._wake.clear()
            await self._wake.wait()

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code, reason), 2.0)
        self._done.set()

    async def stop(self) -> None:
        await self.broker.unsubscribe(self.agent_id, self.on_event)
