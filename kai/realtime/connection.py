"""One client WebSocket watching one agent: a gap-free cursor and a bounded send queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from kai.kit.counters import COUNTS
from kai.realtime.broker import Broker
from kai.realtime.events import Event, dumps, subject

log = logging.getLogger("kai.realtime.connection")


class CloseCode:
    """Close codes of the client WebSocket; docs/websocket.md says what a client should do."""

    GOING_AWAY: Final = 1001  # the hub is shutting down: reconnect with backoff and resume
    POLICY: Final = 1008  # authentication failed, access denied, origin not allowed: give up
    SERVER_ERROR: Final = 1011  # reconnect with backoff and resume
    SESSION_ENDED: Final = 4001  # logout, revoked or disabled: refresh or log in, reconnect
    ACCESS_REVOKED: Final = 4003  # the user may no longer read this agent: give up
    AGENT_DELETED: Final = 4004  # give up
    TEAM_DELETED: Final = 4004  # a team channel's team was deleted: give up
    SLOW_CONSUMER: Final = 4008  # the client did not keep up: reconnect with ?since=last seq


class Sink(Protocol):
    """Where a connection's events go: a person's WebSocket, or an agent's feed."""

    @property
    def closed(self) -> bool: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebSocketSink:
    """A person's WebSocket as a connection's sink."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    @property
    def closed(self) -> bool:
        return self.websocket.application_state == WebSocketState.DISCONNECTED

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code, reason)


@dataclass(frozen=True, slots=True)
class Who:
    user_id: str
    session_id: str
    role: str


StatusSource = Callable[[], Awaitable[dict[str, Any]]]
WRITER_LINGER = 5.0  # seconds an idle writer waits for more before it goes away


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
        sink: Sink,
        *,
        who: Who,
        agent_id: str,
        broker: Broker,
        status: StatusSource,
        max_queue: int,
        snapshot_type: str = "status_update",
    ) -> None:
        self.sink = sink
        self.who = who
        self.agent_id = agent_id  # the log watched: an agent's, or a team channel's
        self.subject = dict([subject(agent_id)])
        self.snapshot_type = snapshot_type
        self.broker = broker
        self.status = status
        self.max_queue = max_queue
        self.epoch = ""
        self.seq = 0
        # An idle connection holds no queue, no event and no writer task: at thousands of
        # watchers per node, a few hundred bytes each matter. They exist while there is traffic.
        self._queue: deque[Any] | None = None
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._buffer: list[Event] | None = None
        self._closing: tuple[int, str] | None = None
        self.closed_here = False
        self.ended = False  # the client is gone: late answers (a command's, say) go nowhere
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
        if self._queue is not None:
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
                "type": self.snapshot_type,
                **self.subject,
                "seq": self.seq,
                "epoch": self.epoch,
                "snapshot": snapshot,
            }
        )

    def _resync_text(self, status: dict[str, Any], reason: str, at: _Resync | None = None) -> str:
        epoch, seq = (at.epoch, at.seq) if at is not None else (self.epoch, self.seq)
        current = {
            **status,
            "type": self.snapshot_type,
            **self.subject,
            "seq": seq,
            "epoch": epoch,
        }
        return dumps(
            {
                "type": "resync_required",
                **self.subject,
                "seq": seq,
                "epoch": epoch,
                "reason": reason,
                "status": current,
            }
        )

    # -- sending -------------------------------------------------------------------------------

    def _put(self, item: Any) -> None:
        if self._closing is not None or self.ended:
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        if len(self._queue) > self.max_queue:
            self.dropped = True
            COUNTS.events_dropped += len(self._queue)
            self._queue.clear()
            self.close_soon(CloseCode.SLOW_CONSUMER, "Slow consumer: resume with ?since")
            return
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write())
        elif self._wake is not None:
            self._wake.set()

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message that is not an agent event (answers, errors)."""
        self._put(dumps(message))

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = (code, reason)
            self._wake_writer()

    @property
    def closing(self) -> bool:
        return self._closing is not None

    async def serve(self, read: Callable[[], Awaitable[None]]) -> None:
        """Run ``read`` (the client's messages) until the client leaves or is closed here."""
        self._reader = asyncio.current_task()
        try:
            await read()
        except asyncio.CancelledError:
            if not self.closed_here or self._reader is None:
                raise
            self._reader.uncancel()  # the writer closed the socket: a normal end
        finally:
            self.ended = True
            self._reader = None
            writer = self._writer
            if writer is not None and writer is not asyncio.current_task():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer

    async def _write(self) -> None:
        """Write the queue out; linger a while when it runs dry, then go away until needed."""
        sink = self.sink
        try:
            while True:
                queue = self._queue
                while queue and self._closing is None:
                    item = queue.popleft()
                    if isinstance(item, _Resync):
                        # Where the break was, not where the cursor is now: events after it
                        # are queued behind this message already.
                        item = self._resync_text(
                            await self.status(), "The event stream broke", item
                        )
                    await sink.send_text(item)
                    self.sent += 1
                    COUNTS.events_delivered += 1
                if self._closing is not None:
                    await self._close(*self._closing)
                    return
                wake = self._wake
                if wake is None:
                    return
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), WRITER_LINGER)
                except TimeoutError:
                    if not self._queue and self._closing is None:
                        self._queue = None
                        return
        except WebSocketDisconnect:
            pass  # the client left while being written to
        except Exception:
            log.exception("client socket writer failed; closing the connection")
            self._closing = (CloseCode.SERVER_ERROR, "Internal error")
            await self._close(*self._closing)
        finally:
            self._writer = None
            self._wake = None

    async def _close(self, code: int, reason: str) -> None:
        if not self.sink.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sink.close(code, reason), 2.0)
        self.closed_here = True
        if self._reader is not None:
            self._reader.cancel()  # no need to wait for the client's closing answer

    async def stop(self) -> None:
        await self.broker.unsubscribe(self.agent_id, self.on_event)
