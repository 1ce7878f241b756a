"""The broker across nodes, on Redis.

Each agent's event log is a Redis stream whose entry ids are ``0-<seq>``; a Lua script numbers
an event, appends it and publishes it in one step, so every node sees one order. Nodes fan out
through pub/sub and fill any gap (a message lost while reconnecting, say) from the stream.
When Redis is unreachable, events wait in order in this node's memory and go out once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from kai.db import utcnow
from kai.kit.counters import COUNTS
from kai.realtime.broker import YIELD_EVERY, Handler, Listener, Replay, Window
from kai.realtime.events import Event, dumps, new_epoch, subject

log = logging.getLogger("kai.realtime.redis")

PREFIX = "kai:"
MAX_PENDING = 100_000
MAX_CONNECTIONS = 100
RETRY_EVERY = 0.5

# KEYS: stream, seq, epoch, channel. ARGV: candidate epoch, JSON body without its closing
# brace, wall-clock ms, max stream length.
_PUBLISH = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
end
local seq = redis.call('INCR', KEYS[2])
local data = ARGV[2] .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. seq, 'd', data, 't', ARGV[3])
redis.call('PUBLISH', KEYS[4], data)
return {seq, epoch}
"""

# KEYS: stream, seq, epoch. ARGV: candidate epoch. Starts a log unless one exists.
_BEGIN = """
if redis.call('SET', KEYS[3], ARGV[1], 'NX') then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return {redis.call('GET', KEYS[3]), redis.call('GET', KEYS[2])}
"""

# The same for many events at once. ARGV: candidate epoch, wall-clock ms, max stream length,
# then each event's JSON body without its closing brace. Returns the first seq and the epoch.
_PUBLISH_MANY = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
end
local count = #ARGV - 3
local first = redis.call('INCRBY', KEYS[2], count) - count + 1
for i = 4, #ARGV do
  local seq = first + i - 4
  local data = ARGV[i] .. ',"seq":' .. seq .. ',"epoch":"' .. epoch .. '"}'
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'd', data, 't', ARGV[2])
  redis.call('PUBLISH', KEYS[4], data)
end
return {first, epoch}
"""

_CLEAR_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _keys(agent_id: str, prefix: str = PREFIX) -> tuple[str, str, str, str]:
    base = f"{prefix}agent:{agent_id}"
    return f"{base}:events", f"{base}:seq", f"{base}:epoch", f"{base}:live"


class _Feed:
    """This node's view of one agent's log: local listeners and the last seq delivered."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self.epoch: str | None = None
        self.seq = 0
        self.lock = asyncio.Lock()


class RedisBroker:
    def __init__(self, url: str, *, node_id: str, window: Window, prefix: str = PREFIX) -> None:
        self.node_id = node_id
        self.window = window
        self.prefix = prefix  # every key and channel starts with it: hubs can share one Redis
        # A blocking pool: a burst of publishes waits for a connection instead of failing with
        # MaxConnectionsError, which would send them to the outbox as if Redis were down.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=10,
        )
        self.redis = redis.Redis.from_pool(pool)
        self._publish = self.redis.register_script(_PUBLISH)
        self._publish_many = self.redis.register_script(_PUBLISH_MANY)
        self._clear = self.redis.register_script(_CLEAR_IF_MINE)
        self._begin = self.redis.register_script(_BEGIN)
        self._feeds: dict[str, _Feed] = {}
        self._handlers: list[Handler] = []
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resubscribe = asyncio.Event()
        self.connected = False

    @property
    def control_channel(self) -> str:
        return f"{self.prefix}control"

    @property
    def node_channel(self) -> str:
        return f"{self.prefix}node:{self.node_id}"

    async def start(self) -> None:
        """Start listening; waits (a few seconds at most) until this node can hear others."""
        self._reader = asyncio.create_task(self._read_forever(), name="kai-redis-reader")
        self._flusher = asyncio.create_task(self._flush_forever(), name="kai-redis-outbox")
        deadline = asyncio.get_running_loop().time() + 5.0
        while not self.connected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if not self.connected:
            log.warning("redis not reachable yet; this node keeps trying in the background")

    async def close(self) -> None:
        for task in (self._reader, self._flusher):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._reader, self._flusher) if t), return_exceptions=True
        )
        with contextlib.suppress(Exception):
            await self._drain_pending()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    # -- the log -------------------------------------------------------------------------------

    async def publish(self, agent_id: str, event: dict[str, Any]) -> Event | None:
        if self._pending:
            self._defer(agent_id, event)
            return None
        try:
            appended = await self._append(agent_id, event)
            COUNTS.events_published += 1
            return appended
        except (RedisError, OSError) as exc:
            COUNTS.broker_errors += 1
            log.warning(
                "redis unavailable (%s); holding events until it is back", type(exc).__name__
            )
            self._defer(agent_id, event)
            return None

    async def publish_many(self, agent_id: str, events: list[dict[str, Any]]) -> None:
        """Append several events in one round trip, in order."""
        if not events:
            return
        if self._pending:
            for event in events:
                self._defer(agent_id, event)
            return
        bodies = []
        for event in events:
            body = dict(event)
            body.setdefault("timestamp", utcnow())
            field, value = subject(agent_id)
            body[field] = value
            body.pop("seq", None)
            body.pop("epoch", None)
            bodies.append(dumps(body)[:-1])
        try:
            await self._publish_many(
                keys=list(_keys(agent_id, self.prefix)),
                args=[new_epoch(), int(time.time() * 1000), self.window.count, *bodies],
            )
            COUNTS.events_published += len(bodies)
        except (RedisError, OSError) as exc:
            COUNTS.broker_errors += 1
            log.warning(
                "redis unavailable (%s); holding events until it is back", type(exc).__name__
            )
            for event in events:
                self._defer(agent_id, event)

    def _defer(self, agent_id: str, event: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            log.error("redis outbox full; the oldest held event was dropped")
        event.setdefault("timestamp", utcnow())
        self._pending.append((agent_id, event))

    async def _append(self, agent_id: str, event: dict[str, Any]) -> Event:
        body = dict(event)
        body.setdefault("timestamp", utcnow())
        field, value = subject(agent_id)
        body[field] = value
        body.pop("seq", None)
        body.pop("epoch", None)
        prefix = dumps(body)[:-1]
        now = time.time()
        seq, epoch = await self._publish(
            keys=list(_keys(agent_id, self.prefix)),
            args=[new_epoch(), prefix, int(now * 1000), self.window.count],
        )
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        text = f'{prefix},"seq":{int(seq)},"epoch":"{epoch}"}}'
        return Event(agent_id, int(seq), epoch, text, now)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(RETRY_EVERY)
            if self._pending:
                with contextlib.suppress(RedisError, OSError):
                    await self._drain_pending()

    async def _drain_pending(self) -> None:
        sent = 0
        while self._pending:
            agent_id, event = self._pending[0]
            await self._append(agent_id, event)
            self._pending.popleft()
            sent += 1
        if sent:
            log.info("redis is back; %d held events sent", sent)

    async def head(self, agent_id: str) -> tuple[str, int]:
        stream, seq_key, epoch_key, _ = _keys(agent_id, self.prefix)
        epoch, seq = await self.redis.mget(epoch_key, seq_key)
        if epoch is None:
            # No log yet (or it was lost): start one now, as the first publish would, so that
            # replays agree with what comes next.
            epoch, seq = await self._begin(keys=[stream, seq_key, epoch_key], args=[new_epoch()])
        return _text(epoch), int(seq or 0)

    async def replay(self, agent_id: str, *, since: int, epoch: str | None) -> Replay:
        current, head = await self.head(agent_id)
        if (epoch is not None and epoch != current) or since > head:
            return Replay(current, head, None)
        if since == head:
            return Replay(current, head, [])
        if head - since > self.window.count:
            # MAXLEN ~ trims in whole stream nodes and may keep more than the window: what
            # the window promises must not depend on where those nodes happen to end.
            return Replay(current, head, None)
        events = await self._range(agent_id, since + 1, head)
        oldest = time.time() - self.window.age
        if not events or events[0].seq != since + 1 or events[0].at < oldest:
            return Replay(current, head, None)
        return Replay(current, head, events)

    async def _range(self, agent_id: str, first: int, last: int) -> list[Event]:
        stream = _keys(agent_id, self.prefix)[0]
        rows: Any = await self.redis.xrange(stream, f"0-{first}", f"0-{last}")
        events = []
        for entry_id, fields in rows:
            seq = int(_text(entry_id).split("-", 1)[1])
            text = _text(fields[b"d"])
            epoch = orjson.loads(text)["epoch"]
            events.append(Event(agent_id, seq, epoch, text, int(_text(fields[b"t"])) / 1000))
        return events

    async def forget(self, agent_id: str) -> None:
        await self.redis.delete(*_keys(agent_id, self.prefix)[:3])

    # -- fan-out -------------------------------------------------------------------------------

    async def subscribe(self, agent_id: str, listener: Listener) -> None:
        feed = self._feeds.get(agent_id)
        if feed is None:
            feed = self._feeds[agent_id] = _Feed()
            async with feed.lock:
                try:
                    await self._ensure_pubsub()
                    await self._pubsub.subscribe(_keys(agent_id, self.prefix)[3])
                    feed.epoch, feed.seq = await self.head(agent_id)
                except BaseException:
                    del self._feeds[agent_id]
                    raise
        feed.listeners.append(listener)

    async def unsubscribe(self, agent_id: str, listener: Listener) -> None:
        feed = self._feeds.get(agent_id)
        if feed is None or listener not in feed.listeners:
            return
        feed.listeners.remove(listener)
        if not feed.listeners:
            del self._feeds[agent_id]
            if self._pubsub is None:
                return  # disconnected: the next connection subscribes only to live feeds
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(_keys(agent_id, self.prefix)[3])

    async def _ensure_pubsub(self) -> None:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(self.control_channel, self.node_channel)

    async def _read_forever(self) -> None:
        handled = 0
        delay = 0.1
        while True:
            try:
                await self._ensure_pubsub()
                if not self.connected:
                    await self._resync_feeds()
                self.connected = True
                delay = 0.1
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None:
                    await self._on_message(message)
                    handled += 1
                    if handled % YIELD_EVERY == 0:
                        # Buffered messages arrive without a pause: let the watchers' writers
                        # send now and then, or a burst would fill their queues.
                        await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("redis connection lost (%s); reconnecting", type(exc).__name__)
                self.connected = False
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
            except Exception:
                log.exception("redis reader failed on a message")

    async def _resync_feeds(self) -> None:
        """After (re)connecting: listen to every feed again and deliver what was missed."""
        for agent_id, feed in list(self._feeds.items()):
            await self._pubsub.subscribe(_keys(agent_id, self.prefix)[3])
            epoch, head = await self.head(agent_id)
            async with feed.lock:
                if epoch != feed.epoch:
                    feed.epoch, feed.seq = epoch, 0
                if head > feed.seq:
                    await self._fill(agent_id, feed, head)

    async def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        data: bytes = message["data"]
        if channel in (self.control_channel, self.node_channel):
            self._dispatch(orjson.loads(data))
            return
        agent_id = channel[len(self.prefix) + len("agent:") :].rsplit(":", 1)[0]
        feed = self._feeds.get(agent_id)
        if feed is None:
            return
        body = orjson.loads(data)
        event = Event(agent_id, int(body["seq"]), str(body["epoch"]), data.decode(), time.time())
        async with feed.lock:
            if event.epoch != feed.epoch:
                feed.epoch, feed.seq = event.epoch, 0  # a new log: fill it from its start
            if event.seq <= feed.seq:
                return
            if event.seq > feed.seq + 1:
                await self._fill(agent_id, feed, event.seq - 1)
            self._deliver(feed, event)

    async def _fill(self, agent_id: str, feed: _Feed, last: int) -> None:
        for event in await self._range(agent_id, feed.seq + 1, last):
            if event.seq == feed.seq + 1:
                self._deliver(feed, event)

    @staticmethod
    def _deliver(feed: _Feed, event: Event) -> None:
        feed.seq = event.seq
        feed.epoch = event.epoch
        for listener in list(feed.listeners):
            listener(event)

    # -- presence and routing ------------------------------------------------------------------

    async def set_presence(self, agent_id: str, *, ttl: float) -> None:
        await self.redis.set(f"{self.prefix}presence:{agent_id}", self.node_id, px=int(ttl * 1000))

    async def clear_presence(self, agent_id: str) -> None:
        await self._clear(keys=[f"{self.prefix}presence:{agent_id}"], args=[self.node_id])

    async def presence(self, agent_id: str) -> str | None:
        value = await self.redis.get(f"{self.prefix}presence:{agent_id}")
        return _text(value) if value is not None else None

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> None:
        await self.redis.publish(f"{self.prefix}node:{node_id}", orjson.dumps(message))

    async def broadcast(self, message: dict[str, Any]) -> None:
        await self.redis.publish(self.control_channel, orjson.dumps(message))

    def on_message(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def _dispatch(self, message: dict[str, Any]) -> None:
        for handler in self._handlers:
            task = asyncio.get_running_loop().create_task(handler(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
