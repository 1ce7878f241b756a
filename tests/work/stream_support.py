"""Helpers of the stream tests: Server-Sent Events read back, a stream's events on the client
WebSocket, its stored chunks, the demo agent's answer, and agent processes with an environment."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import select

from kai.container import Container as Hub
from kai.work.models import StreamChunk
from tests.agents.processes import REPO_ROOT, AgentProcess, child_env
from tests.agents.support import Person
from tests.helpers import bearer
from tests.realtime.client_support import Watcher

# Events other than a stream's that a watcher of the demo agent may see meanwhile.
OTHER_EVENTS = {"status_update", "log_stream"}


def demo_answer(prompt: str) -> list[str]:
    """The chunks the demo agent streams for ``prompt`` (see kai/demo.py)."""
    words = f"You asked: {prompt.strip() or '(nothing)'}. This is the demo agent answering.".split()
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


async def open_stream(person: Person, agent_id: str, body: Any) -> httpx.Response:
    return await person.call("POST", f"/api/agents/{agent_id}/stream-prompt", json=body)


# -- Server-Sent Events ------------------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: dict[str, Any]
    id: int | None


def _parse(block: str) -> SseEvent | None:
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        if line.startswith(":"):
            continue  # a keepalive comment
        name, separator, value = line.partition(": ")
        assert separator, f"not a field line: {line!r}"
        assert name in {"id", "event", "data"}, line
        assert name not in fields, block
        fields[name] = value
    if not fields:
        return None
    event_id = fields.get("id")
    return SseEvent(
        fields["event"], orjson.loads(fields["data"]), int(event_id) if event_id else None
    )


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a ``text/event-stream`` response, as they arrive."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = _parse(block)
            if event is not None:
                yield event
    assert buffer == "", f"the stream stopped inside an event: {buffer!r}"


def path_of(url: str) -> str:
    """The path and query of ``url``: a ``streamUrl`` names the public host, not the test's."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def read_sse(
    person: Person,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    timeout: float = 20.0,
) -> list[SseEvent]:
    """Every event of the stream at ``url``, read until the hub ends the response."""

    async def read() -> list[SseEvent]:
        async with person.server.client.stream(
            "GET", path_of(url), headers={**bearer(person.token), **(headers or {})}, params=params
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise AssertionError(f"{response.status_code}: {response.text}")
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            return [event async for event in sse_events(response)]

    return await asyncio.wait_for(read(), timeout)


def answer_of(events: list[SseEvent], *, start: int = 0) -> tuple[list[str], dict[str, Any]]:
    """The chunks and the end of a stream read over SSE from chunk ``start``, checking that
    the chunks come in order, each with its index as its id, and the end last and only once."""
    assert events, "no event at all"
    *chunks, end = events
    assert (end.event, end.id) == ("end", None), end
    stream_id = end.data["streamId"]
    for offset, event in enumerate(chunks):
        index = start + offset
        assert event.event == "chunk", event
        assert event.id == index, event
        assert event.data == {"streamId": stream_id, "index": index, "chunk": event.data["chunk"]}
    return [event.data["chunk"] for event in chunks], end.data


# -- the client WebSocket ----------------------------------------------------------------------


async def stream_chunks(
    watcher: Watcher, stream_id: str, *, count: int | None = None, timeout: float = 15.0
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The stream's ``stream_chunk`` events on the socket up to its end (or, with ``count``,
    the next ``count`` chunks), other events of the agent skipped."""
    chunks: list[dict[str, Any]] = []
    while count is None or len(chunks) < count:
        message = await watcher.recv(timeout)
        if message["type"] in OTHER_EVENTS:
            continue
        assert message["type"] == "stream_chunk", message
        assert message["streamId"] == stream_id, message
        if message["done"]:
            assert count is None, f"the stream ended early: {message}"
            return chunks, message
        chunks.append(message)
    return chunks, None


async def no_more_chunks(watcher: Watcher, seconds: float) -> None:
    """No ``stream_chunk`` event arrives for ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await watcher.recv(left)
        except TimeoutError:
            return
        assert message["type"] in OTHER_EVENTS, message


def check_seq(events: list[dict[str, Any]]) -> None:
    """The events a watcher received are numbered one by one, without a gap."""
    seqs = [event["seq"] for event in events if "seq" in event]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


# -- the database ------------------------------------------------------------------------------


async def stored_chunks(hub: Hub, stream_id: str) -> list[tuple[int, str]]:
    """The stream's rows of ``stream_chunks``: (index, chunk) in order."""
    async with hub.db.session(write=False) as session:
        rows = await session.execute(
            select(StreamChunk.index, StreamChunk.chunk)
            .where(StreamChunk.stream_id == stream_id)
            .order_by(StreamChunk.index)
        )
        return [(index, chunk) for index, chunk in rows]


# -- agent processes -----------------------------------------------------------------------------


def spawn_with_env(
    output: Path, token: str, url: str, *, target: str, env: dict[str, str]
) -> AgentProcess:
    """``kai agent run TARGET`` with extra environment variables, its output in ``output``."""
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-m", "kai", "agent", "run", target, "--url", url],
            cwd=REPO_ROOT,
            env=child_env(**env, KAI_AGENT_TOKEN=token),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return AgentProcess(popen, output)
