"""Working with peers from an agent: commands, subtasks and prompt streams on other agents of
the same owner, team channels, and feeds of a peer's events (docs/teams.md).

    @agent.task("report")
    async def report(params, task):
        left, right = await asyncio.gather(
            task.peer("worker-a").task("summarize", {"text": params["a"]}),
            task.peer("worker-b").task("summarize", {"text": params["b"]}),
        )
        answer = await task.peer("checker").command("check", {"text": left + right})
        async for chunk in task.peer("writer").stream("Tell me a story"):
            ...

Everything goes through the hub, which checks the grants the owner made.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kai.sdk.peers")

FINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_EARLY = 1000
SLOW_READER = 4008  # a feed_closed code: resubscribe from the last seq
Send = Callable[[dict[str, Any]], Awaitable[None]]


class PeerError(Exception):
    """The hub refused a request to a peer (no grant, unknown peer, not connected...), or the
    peer's command failed."""

    def __init__(self, error: str, *, status: int | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class SubtaskFailed(PeerError):
    """A subtask ended ``failed`` or ``cancelled``; ``update`` is its last state."""

    def __init__(self, update: dict[str, Any]) -> None:
        status = str(update.get("status"))
        super().__init__(f"subtask {update.get('taskId')} {status}: {update.get('error') or ''}")
        self.update = update


@dataclass
class Subtask:
    """A task queued for a peer: await ``result()`` for its outcome."""

    task_id: str
    peer_id: str
    status: str
    replayed: bool
    _done: asyncio.Future[dict[str, Any]] = field(repr=False)
    _coordinator: Coordinator = field(repr=False)
    updates: list[dict[str, Any]] = field(default_factory=list, repr=False)

    async def result(self) -> Any:
        """The subtask's result once it succeeded; ``SubtaskFailed`` otherwise."""
        final = await asyncio.shield(self._done)
        if final.get("status") != "succeeded":
            raise SubtaskFailed(final)
        return final.get("result")

    async def cancel(self) -> None:
        await self._coordinator.request({"type": "peer_task_cancel", "taskId": self.task_id})


@dataclass
class _Feed:
    """One subscription on the hub, shared by every reader of that feed in this agent."""

    ready: asyncio.Future[None]  # set once the hub accepted it; fails if it refused
    readers: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)
    seq: int | None = None
    epoch: str | None = None
    snapshot: dict[str, Any] | None = None  # the last one: where a later reader starts

    def put(self, item: dict[str, Any] | None) -> None:
        if item is not None and item.get("snapshot"):
            self.snapshot = item
        for reader in self.readers:
            reader.put_nowait(item)


class Coordinator:
    """The agent's side of coordination: requests waiting for their ``peer_reply``, subtasks
    waiting for their end, peer streams and feeds. Survives reconnects: feeds resume from the
    last ``seq`` and subtasks are asked after, so nothing is missed while the hub was away."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subtasks: dict[str, Subtask] = {}
        self._streams: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._feeds: dict[str, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Updates of subtasks whose creation answer has not come yet (they can overtake it).
        self._early: dict[str, dict[str, Any]] = {}

    # -- requests -------------------------------------------------------------------------------

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` with a request id and return the hub's answer; ``PeerError`` if the
        hub refused it. A lost connection fails the request with ``ConnectionError``."""
        request_id = f"{self._prefix}-{next(self._ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = waiter
        try:
            await self._send({**message, "requestId": request_id})
            reply = await waiter
        finally:
            self._pending.pop(request_id, None)
        if not reply.get("ok"):
            error = str(reply.get("error"))
            details = reply.get("details")
            if isinstance(details, list) and details:
                error += ": " + "; ".join(
                    f"{d.get('field')}: {d.get('message')}" for d in details if isinstance(d, dict)
                )
            raise PeerError(error, status=reply.get("status"))
        return reply

    async def subtask(self, message: dict[str, Any]) -> Subtask:
        reply = await self.request(message)
        task_id = str(reply["taskId"])
        known = self._subtasks.get(task_id)
        if known is not None:
            return known
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        handle = Subtask(
            task_id, str(reply["peerId"]), str(reply["status"]), bool(reply["replayed"]), done, self
        )
        self._subtasks[task_id] = handle
        self._settle(handle, reply)
        early = self._early.pop(task_id, None)
        if early is not None and handle.status not in FINAL:
            self._settle(handle, early)
        return handle

    def _settle(self, handle: Subtask, update: dict[str, Any]) -> None:
        if handle._done.done():
            return  # a late, older update after the end
        handle.status = str(update.get("status"))
        handle.updates.append(update)
        if handle.status in FINAL:
            handle._done.set_result(update)
            self._subtasks.pop(handle.task_id, None)

    async def stream(self, message: dict[str, Any]) -> AsyncIterator[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reply = await self.request(message)
        stream_id = str(reply["streamId"])
        early = self._streams.get(stream_id)  # chunks that came before the reply
        self._streams[stream_id] = queue
        if early is not None:
            while not early.empty():
                queue.put_nowait(early.get_nowait())
        try:
            while True:
                item = await queue.get()
                if item.get("type") == "peer_stream_end":
                    if item.get("status") != "completed":
                        raise PeerError(
                            f"stream {stream_id} {item.get('status')}: {item.get('error') or ''}"
                        )
                    return
                yield str(item.get("chunk", ""))
        finally:
            self._streams.pop(stream_id, None)

    async def feed(self, name: str, since: int | None) -> AsyncIterator[dict[str, Any]]:
        """The feed's events; a second reader of the same feed shares its subscription (and
        hears it from the moment it joins). Ends after a ``feed_closed`` event."""
        reader: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        feed = self._feeds.get(name)
        if feed is None:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            feed = self._feeds[name] = _Feed(ready, seq=since)
            feed.readers.append(reader)
            try:
                await self.request({"type": "subscribe", "feed": name, "since": since})
                ready.set_result(None)
            except BaseException as exc:
                ready.set_exception(exc)
                ready.exception()  # retrieved here; other readers get it too
                if self._feeds.get(name) is feed:
                    del self._feeds[name]  # refused: never asked for again
                raise
        else:
            feed.readers.append(reader)
            try:
                await asyncio.shield(feed.ready)
            except BaseException:
                feed.readers.remove(reader)
                raise
            if feed.snapshot is not None and reader.empty():
                reader.put_nowait(feed.snapshot)
        try:
            while (item := await reader.get()) is not None:
                yield item
        finally:
            if reader in feed.readers:
                feed.readers.remove(reader)
            if not feed.readers and self._feeds.get(name) is feed:
                del self._feeds[name]
                try:
                    await self._send({"type": "unsubscribe", "feed": name})
                except ConnectionError:
                    pass

    # -- messages from the hub ----------------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> bool:
        """Take a coordination message; False if it is not one."""
        kind = message.get("type")
        if kind == "peer_reply":
            waiter = self._pending.get(str(message.get("requestId")))
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            elif not message.get("ok"):
                log.warning("the hub refused a request: %s", message.get("error"))
        elif kind == "subtask_update":
            self._on_subtask(message)
        elif kind in ("peer_stream_chunk", "peer_stream_end"):
            stream_id = str(message.get("streamId"))
            self._streams.setdefault(stream_id, asyncio.Queue()).put_nowait(message)
        elif kind == "feed":
            self._on_feed(message)
        elif kind == "feed_closed":
            self._on_feed_closed(message)
        else:
            return False
        return True

    def _on_subtask(self, message: dict[str, Any]) -> None:
        task_id = str(message.get("taskId"))
        handle = self._subtasks.get(task_id)
        if handle is not None:
            self._settle(handle, message)
        elif message.get("status") in FINAL or task_id not in self._early:
            if len(self._early) >= MAX_EARLY:
                self._early.pop(next(iter(self._early)))
            self._early[task_id] = message

    def _on_feed_closed(self, message: dict[str, Any]) -> None:
        log.warning("feed %s closed by the hub: %s", message.get("feed"), message.get("reason"))
        name = str(message.get("feed"))
        feed = self._feeds.get(name)
        if feed is None:
            return
        if message.get("code") == SLOW_READER:
            # Closed for reading too slowly: carry on from the last event seen.
            self._spawn(self._send(self._subscription(name, feed)))
            return
        del self._feeds[name]  # access was taken back: the readers hear why, then end
        feed.put({**message, "type": "feed_closed"})
        feed.put(None)

    def _on_feed(self, message: dict[str, Any]) -> None:
        feed = self._feeds.get(str(message.get("feed")))
        event = message.get("event")
        if feed is None or not isinstance(event, dict):
            return
        if isinstance(event.get("seq"), int):
            feed.seq, feed.epoch = event["seq"], event.get("epoch")
        feed.put(event)

    async def connected(self) -> None:
        """Back on the hub: resume the feeds and ask after the subtasks still running."""
        for name, feed in list(self._feeds.items()):
            if feed.ready.done() and feed.ready.exception() is None:  # accepted before
                await self._send(self._subscription(name, feed))
        for task_id in list(self._subtasks):
            self._spawn(self._ask_after(task_id))

    @staticmethod
    def _subscription(name: str, feed: _Feed) -> dict[str, Any]:
        return {"type": "subscribe", "feed": name, "since": feed.seq, "epoch": feed.epoch}

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await work
            except (ConnectionError, PeerError) as exc:
                log.warning("coordination message not sent: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask_after(self, task_id: str) -> None:
        try:
            reply = await self.request({"type": "peer_task_status", "taskId": task_id})
        except (PeerError, ConnectionError) as exc:
            log.warning("subtask %s: status not read (%s)", task_id, exc)
            return
        handle = self._subtasks.get(task_id)
        if handle is not None:
            self._settle(handle, reply)

    def disconnected(self) -> None:
        """The connection is gone: requests waiting for an answer will get none."""
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection to the hub was lost"))
        for queue in self._streams.values():
            queue.put_nowait(
                {"type": "peer_stream_end", "status": "failed", "error": "connection lost"}
            )


class Peer:
    """Another agent of the same owner, by name or id, as this agent may reach it."""

    def __init__(self, coordinator: Coordinator, peer: str, parent_task_id: str | None) -> None:
        self._coordinator = coordinator
        self.name = peer
        self._parent = parent_task_id
        self._keys: Callable[[], str] | None = None

    async def command(
        self, command: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send a command and return its result; ``PeerError`` if it failed or was refused."""
        message: dict[str, Any] = {
            "type": "peer_command",
            "peer": self.name,
            "command": command,
            "params": params or {},
        }
        if timeout is not None:
            message["timeout"] = timeout
        reply = await self._coordinator.request(message)
        if not reply.get("success"):
            raise PeerError(str(reply.get("error") or "command failed"))
        return reply.get("result")

    async def submit(
        self,
        task_type: str,
        params: dict[str, Any] | None = None,
        *,
        priority: str = "medium",
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Subtask:
        """Queue a task for the peer and return its handle at once. Inside a task, it is a
        subtask of that task: cancelling the parent cancels it, and a re-run of the parent
        finds the subtasks its earlier attempt created instead of making new ones."""
        message: dict[str, Any] = {
            "type": "peer_task",
            "peer": self.name,
            "taskType": task_type,
            "params": params or {},
            "priority": priority,
        }
        key = idempotency_key or (self._keys() if self._keys is not None else None)
        if key is not None:
            message["idempotencyKey"] = key
        if max_attempts is not None:
            message["maxAttempts"] = max_attempts
        if self._parent is not None:
            message["parentTaskId"] = self._parent
        return await self._coordinator.subtask(message)

    async def task(
        self,
        task_type: str,
        params: dict[str, Any] | None = None,
        *,
        priority: str = "medium",
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Any:
        """Queue a task for the peer and wait for its result (``SubtaskFailed`` if it fails)."""
        handle = await self.submit(
            task_type,
            params,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
        )
        return await handle.result()

    def stream(
        self,
        prompt: str,
        *,
        context: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Open a prompt stream on the peer and yield its chunks as they come."""
        return self._coordinator.stream(
            {
                "type": "peer_stream",
                "peer": self.name,
                "prompt": prompt,
                "context": context or {},
                "options": options or {},
            }
        )

    def events(self, since: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The peer's events (status, logs, work), as a person watching it sees them."""
        return self._coordinator.feed(f"agent:{self.name}", since)


class Team:
    """A team this agent is a member of: an ordered channel its members share."""

    def __init__(self, coordinator: Coordinator, team_id: str) -> None:
        self._coordinator = coordinator
        self.team_id = team_id

    async def publish(self, data: Any, *, topic: str = "message") -> int | None:
        """Put ``data`` on the channel; returns its ``seq`` in the channel."""
        reply = await self._coordinator.request(
            {"type": "team_publish", "teamId": self.team_id, "topic": topic, "data": data}
        )
        seq = reply.get("seq")
        return int(seq) if isinstance(seq, int) else None

    def subscribe(self, since: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The channel's messages in order: a ``team_status`` snapshot first, then every
        ``team_message`` after ``since`` (or from now), resumed by itself after a reconnect."""
        return self._coordinator.feed(f"team:{self.team_id}", since)
