"""Prompt streams: a prompt handed to an agent, its answer relayed chunk by chunk.

Each chunk is published at once as a ``stream_chunk`` event on the agent's event log (so every
watcher of the agent, on any node, sees it) and stored in batches. The end is stored only after
every chunk before it, then published as a last ``stream_chunk`` with ``done: true``: a reader
that sees the end finds all the chunks in the database. A stream can be read as Server-Sent
Events, live or replayed from any index, until it expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import orjson
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer, effective_status
from kai.config import Settings
from kai.db import Database, new_id, utcnow
from kai.errors import BadRequest, Conflict, Gone, NotFound
from kai.kit.batch import BatchWriter
from kai.kit.clock import Clock
from kai.protocol.agent import StreamChunk as ChunkMessage
from kai.protocol.agent import StreamEnd
from kai.protocol.control import StreamCancelled
from kai.protocol.states import StreamStatus
from kai.realtime.broker import Broker
from kai.realtime.events import Event
from kai.work.models import Stream, StreamChunk

log = logging.getLogger("kai.work.streams")

STREAM_NOT_FOUND = "Stream not found"
ACTIVE = (StreamStatus.PENDING, StreamStatus.RUNNING)
READ_BATCH = 500
KEEPALIVE = 15.0
GONE_KEPT = timedelta(days=1)  # how long an expired stream still answers 410


@dataclass(slots=True)
class _Active:
    """A stream whose chunks arrive on this node."""

    agent_id: str
    next_index: int = 0


class Streams:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        registry: Registry,
        relay: Relay,
        broker: Broker,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.relay = relay
        self.clock = clock
        self.broker = broker
        self.writer: BatchWriter[dict[str, Any]] = BatchWriter(
            "stream-chunks",
            self._write_chunks,
            interval=settings.stream_flush_interval,
            batch_size=2000,
        )
        self._active: dict[str, _Active] = {}
        self.chunks_relayed = 0

    async def _write_chunks(self, rows: list[dict[str, Any]]) -> None:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["stream_id"]] = max(counts.get(row["stream_id"], 0), row["index"] + 1)
        table = cast(Table, Stream.__table__)
        async with self.db.session() as session:
            await session.execute(insert(StreamChunk), rows)
            # A stream's count is the chunks stored so far, at every moment.
            await session.execute(
                update(table)
                .where(table.c.id == bindparam("sid"), table.c.chunks < bindparam("n"))
                .values(chunks=bindparam("n")),
                [{"sid": stream_id, "n": count} for stream_id, count in counts.items()],
            )

    # -- people's side -----------------------------------------------------------------------

    async def open(
        self,
        viewer: Viewer,
        agent_id: str,
        *,
        prompt: str,
        context: dict[str, Any],
        options: dict[str, Any],
        source_agent_id: str | None = None,
    ) -> Stream:
        """Record the stream and hand the prompt to the agent's stream handler."""
        async with self.db.session(write=False) as session:
            agent = await self.registry.visible(session, viewer, agent_id)
        if effective_status(agent, utcnow()) in ("offline", "restarting"):
            raise Conflict("Agent is not connected")
        if not (agent.capabilities or {}).get("streaming"):
            raise BadRequest("Agent does not take prompt streams")
        now = self.clock.now()
        stream = Stream(
            id=new_id(),
            agent_id=agent_id,
            user_id=viewer.user_id,
            prompt=prompt,
            context=context,
            options=options,
            source_agent_id=source_agent_id,
            status=StreamStatus.PENDING,
            chunks=0,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.stream_ttl),
        )
        async with self.db.session() as session:
            session.add(stream)
        message = {
            "type": "prompt",
            "streamId": stream.id,
            "prompt": prompt,
            "context": context,
            "options": options,
        }
        try:
            delivered = await self.relay.deliver(agent_id, message)
        except BaseException:
            await self._end(stream.id, agent_id, status=StreamStatus.FAILED, error="Not delivered")
            raise
        if not delivered:
            await self._end(
                stream.id, agent_id, status=StreamStatus.FAILED, error="Agent is not connected"
            )
            raise Conflict("Agent is not connected")
        return stream

    async def visible(self, session: AsyncSession, viewer: Viewer, stream_id: str) -> Stream:
        """The stream, if ``viewer`` may see its agent; otherwise 404 (410 once expired)."""
        stream = await session.get(Stream, stream_id)
        if stream is None or not await self.registry.sees(session, viewer, stream.agent_id):
            raise NotFound(STREAM_NOT_FOUND)
        if stream.expires_at <= self.clock.now():
            raise Gone("Stream expired", expiresAt=stream.expires_at)
        return stream

    async def cancel(self, viewer: Viewer, stream_id: str) -> tuple[Stream, str]:
        """Stop a stream: it ends ``cancelled`` now and its agent is told to stop generating."""
        async with self.db.session() as session:
            await self.visible(session, viewer, stream_id)
            stream = await session.scalar(
                select(Stream)
                .where(Stream.id == stream_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if stream is None:
                raise NotFound(STREAM_NOT_FOUND)
            previous = stream.status
            if previous not in ACTIVE:
                raise Conflict(f"Stream already {previous}", currentStatus=previous)
            stream.status = StreamStatus.CANCELLED
            stream.completed_at = self.clock.now()
        if previous == StreamStatus.PENDING:
            # No chunk has come, so no node holds it: its end is told from here.
            await self._publish_end(stream.agent_id, stream_id, StreamStatus.CANCELLED, 0, None)
        else:  # the node its chunks arrive on stores their count and tells the end
            await self.broker.broadcast(StreamCancelled(stream_id=stream_id).wire())
        await self.relay.deliver(stream.agent_id, {"type": "cancel", "id": stream_id})
        return stream, previous

    async def on_stream_cancelled(self, cancelled: StreamCancelled) -> None:
        """A stream was cancelled on another node: if its chunks arrive here, end it here."""
        active = self._active.pop(cancelled.stream_id, None)
        if active is not None:
            await self._cancelled(cancelled.stream_id, active)

    async def _cancelled(self, stream_id: str, active: _Active) -> None:
        """On the node holding a cancelled stream: store every chunk it took and their count,
        then tell the end. Chunks the agent sends before it stops are dropped."""
        await self.writer.flush()
        async with self.db.session() as session:
            await session.execute(
                update(Stream).where(Stream.id == stream_id).values(chunks=active.next_index)
            )
        await self._publish_end(
            active.agent_id, stream_id, StreamStatus.CANCELLED, active.next_index, None
        )

    # -- the agent's side --------------------------------------------------------------------

    async def chunk(self, agent_id: str, message: ChunkMessage) -> str | None:
        """Relay and store one chunk; an error for the agent when it cannot be taken."""
        active = self._active.get(message.stream_id)
        if active is None:
            stream = await self._adopt(agent_id, message.stream_id)
            if not isinstance(stream, _Active):
                # Chunks of a stream cancelled before the agent heard of it: drop them quietly.
                return None if stream == StreamStatus.CANCELLED else "Unknown stream"
            active = stream
        if active.agent_id != agent_id:
            return "Unknown stream"
        if message.index != active.next_index:
            return f"Chunk out of order: expected index {active.next_index}"
        active.next_index += 1
        self.writer.record(
            {"stream_id": message.stream_id, "index": message.index, "chunk": message.chunk}
        )
        self.chunks_relayed += 1
        await self.relay.publish(
            agent_id,
            {
                "type": "stream_chunk",
                "streamId": message.stream_id,
                "index": message.index,
                "chunk": message.chunk,
                "done": False,
            },
        )
        return None

    async def _adopt(self, agent_id: str, stream_id: str) -> _Active | str | None:
        """The first chunk of a stream on this node: check it is this agent's and running.
        Otherwise the status of the agent's stream, or None if it is not the agent's."""
        async with self.db.session() as session:
            stream = await session.get(Stream, stream_id)
            if stream is None or stream.agent_id != agent_id:
                return None
            if stream.status not in ACTIVE:
                return stream.status
            stream.status = StreamStatus.RUNNING
            active = _Active(agent_id, next_index=stream.chunks)
        self._active[stream_id] = active
        return active

    async def ended(self, agent_id: str, message: StreamEnd) -> str | None:
        active = self._active.get(message.stream_id)
        if active is not None and active.agent_id != agent_id:
            return "Unknown stream"
        error = message.error if message.status != "completed" else None
        if await self._end(message.stream_id, agent_id, status=message.status, error=error):
            return None
        async with self.db.session(write=False) as session:
            stream = await session.get(Stream, message.stream_id)
        if (
            stream is not None
            and stream.agent_id == agent_id
            and stream.status == StreamStatus.CANCELLED
        ):
            return None  # the agent confirms a cancel it was asked for
        return "Unknown stream"

    async def _end(self, stream_id: str, agent_id: str, *, status: str, error: str | None) -> bool:
        """Store the end after every chunk before it, then publish it; False if it had ended."""
        active = self._active.pop(stream_id, None)
        await self.writer.flush()
        now = self.clock.now()
        async with self.db.session() as session:
            stream = await session.scalar(
                select(Stream)
                .where(Stream.id == stream_id, Stream.agent_id == agent_id)
                .with_for_update()
            )
            if stream is None:
                return False
            if active is not None:
                stream.chunks = active.next_index
            chunks = stream.chunks
            if stream.status not in ACTIVE:
                return False  # cancelled meanwhile (its count is now right too)
            stream.status = status
            stream.error = error
            stream.completed_at = now
        await self._publish_end(agent_id, stream_id, status, chunks, error)
        return True

    async def _publish_end(
        self, agent_id: str, stream_id: str, status: str, chunks: int | None, error: str | None
    ) -> None:
        event: dict[str, Any] = {
            "type": "stream_chunk",
            "streamId": stream_id,
            "index": chunks,
            "chunk": "",
            "done": True,
            "status": status,
        }
        if error:
            event["error"] = error
        await self.relay.publish(agent_id, event)

    async def agent_left(self, agent_id: str) -> None:
        """The agent's connection here ended: its unfinished streams end ``failed``."""
        for stream_id in [s for s, a in self._active.items() if a.agent_id == agent_id]:
            await self._end(
                stream_id, agent_id, status=StreamStatus.FAILED, error="Agent disconnected"
            )
        async with self.db.session(write=False) as session:
            waiting = list(
                await session.scalars(
                    select(Stream.id).where(
                        Stream.agent_id == agent_id, Stream.status == StreamStatus.PENDING
                    )
                )
            )
        for stream_id in waiting:
            await self._end(
                stream_id, agent_id, status=StreamStatus.FAILED, error="Agent disconnected"
            )

    async def prune(self) -> int:
        """Drop the chunks of expired streams. The stream itself stays a day longer, so that
        it answers 410 Gone rather than 404, and then goes."""
        now = self.clock.now()
        async with self.db.session() as session:
            expired = select(Stream.id).where(Stream.expires_at < now).scalar_subquery()
            result = await session.execute(
                delete(StreamChunk).where(StreamChunk.stream_id.in_(expired))
            )
            await session.execute(delete(Stream).where(Stream.expires_at < now - GONE_KEPT))
        return int(getattr(result, "rowcount", 0) or 0)

    # -- reading -----------------------------------------------------------------------------

    async def chunks_from(self, stream_id: str, start: int, limit: int) -> list[StreamChunk]:
        async with self.db.session(write=False) as session:
            rows = await session.scalars(
                select(StreamChunk)
                .where(StreamChunk.stream_id == stream_id, StreamChunk.index >= start)
                .order_by(StreamChunk.index)
                .limit(limit)
            )
            return list(rows)

    async def state(self, stream_id: str) -> Stream | None:
        async with self.db.session(write=False) as session:
            return await session.get(Stream, stream_id)

    async def follow(self, stream: Stream, start: int) -> AsyncIterator[str]:
        """The stream from chunk ``start`` as Server-Sent Events: stored chunks first, then
        live ones, then its end. Comments keep an idle connection open."""
        async for item in self.read(stream, start):
            yield sse(*item) if item[0] != KEEPALIVE_ITEM else ": keepalive\n\n"

    async def read(self, stream: Stream, start: int) -> AsyncIterator[Item]:
        """The stream from chunk ``start`` without a gap: ``("chunk", data, index)`` items,
        then ``("end", data, None)``; ``("keepalive", {}, None)`` while nothing comes."""
        reader = _Reader(self, stream, start)
        await self.broker.subscribe(stream.agent_id, reader.listen)
        try:
            async for item in reader.run():
                yield item
        finally:
            await self.broker.unsubscribe(stream.agent_id, reader.listen)


Item = tuple[str, dict[str, Any], int | None]
KEEPALIVE_ITEM = "keepalive"


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {orjson.dumps(data).decode()}\n\n"


class _Reader:
    """One SSE reader: merges stored chunks and live events into one gap-free sequence."""

    def __init__(self, streams: Streams, stream: Stream, start: int) -> None:
        self.streams = streams
        self.stream_id = stream.id
        self.next = start
        self.pending: dict[int, dict[str, Any]] = {}
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def listen(self, event: Event) -> None:
        if self.stream_id in event.text:  # cheap test before parsing
            message = event.message
            if message.get("type") == "stream_chunk" and message.get("streamId") == self.stream_id:
                self.queue.put_nowait(message)

    def _chunk(self, index: int, chunk: str) -> Item:
        self.next = index + 1
        return "chunk", {"streamId": self.stream_id, "index": index, "chunk": chunk}, index

    async def _stored(self) -> AsyncIterator[Item]:
        while True:
            rows = await self.streams.chunks_from(self.stream_id, self.next, READ_BATCH)
            gap = False
            for row in rows:
                if row.index != self.next:
                    gap = True
                    break
                yield self._chunk(row.index, row.chunk)
            for text in self._drain_pending():
                yield text
            if gap or len(rows) < READ_BATCH:
                return

    def _drain_pending(self) -> list[Item]:
        out = []
        while self.next in self.pending:
            message = self.pending.pop(self.next)
            out.append(self._chunk(self.next, str(message.get("chunk", ""))))
        self.pending = {i: m for i, m in self.pending.items() if i >= self.next}
        return out

    async def _end(self) -> Item | None:
        """The end event, if the stream has ended and every chunk was sent."""
        stream = await self.streams.state(self.stream_id)
        if stream is None:
            return (
                "end",
                {"streamId": self.stream_id, "status": StreamStatus.FAILED, "chunks": self.next},
                None,
            )
        if stream.status in ACTIVE or self.next < stream.chunks:
            return None
        data: dict[str, Any] = {
            "streamId": self.stream_id,
            "status": stream.status,
            "chunks": stream.chunks,
        }
        if stream.error:
            data["error"] = stream.error
        return "end", data, None

    async def run(self) -> AsyncIterator[Item]:
        check = True  # read the database: at the start, at the end, and to fill a gap
        while True:
            if check:
                async for text in self._stored():
                    yield text
                end = await self._end()
                if end is not None:
                    yield end
                    return
            out, came, ended = await self._live()
            for text in out:
                yield text
            if not came and not self.pending:
                yield KEEPALIVE_ITEM, {}, None
            check = ended or bool(self.pending) or not came

    async def _live(self) -> tuple[list[Item], bool, bool]:
        """Live chunks in order; whether anything came in time; whether the end came."""
        timeout = self.streams.settings.stream_flush_interval * 3 if self.pending else KEEPALIVE
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return [], False, False
        batch = [first]
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        out: list[Item] = []
        ended = False
        for message in batch:
            index = message.get("index")
            if message.get("done"):
                ended = True  # the caller reads the end from the database
            elif not isinstance(index, int) or index < self.next:
                continue
            elif index == self.next:
                out.append(self._chunk(index, str(message.get("chunk", ""))))
                out.extend(self._drain_pending())
            else:
                self.pending[index] = message
        return out, True, ended
