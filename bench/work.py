"""Work through the hub: command round trips and prompt streams, each beside a bare baseline."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.hub import login, raw_agent, start_baseline, watcher
from bench.report import Row, Sizes, latency, rate, say

WORD = " token"  # a chunk the size of an LLM's token


def dumps(message: object) -> str:
    return orjson.dumps(message).decode()


async def _answer_commands(agent: ClientConnection) -> None:
    """The agent's side: every ``command`` answered at once with its own params."""
    async for raw in agent:
        message = orjson.loads(raw)
        if message["type"] == "command":
            answer = {
                "type": "command_result",
                "commandId": message["commandId"],
                "success": True,
                "result": message["params"],
            }
            await agent.send(dumps(answer))


async def _command_result(ws: ClientConnection) -> None:
    """Read the client socket up to the command's result (its acknowledgement comes first)."""
    while True:
        message = orjson.loads(await ws.recv())
        kind = message["type"]
        if kind == "command_result":
            return
        if kind in ("command_error", "error"):
            raise RuntimeError(f"command failed: {message}")


async def commands_kai(agent_port: int, client_port: int, rounds: int) -> list[float]:
    """Seconds from ``command_execute`` leaving a client to its ``command_result`` arriving,
    through a raw agent that answers at once."""
    session = await login(agent_port)
    agent_id, token = await session.create_agent(f"commands-{uuid.uuid4().hex[:6]}")
    client_session = await login(client_port)
    samples = []
    async with raw_agent(agent_port, token, commands=["echo"]) as agent:
        answering = asyncio.create_task(_answer_commands(agent))
        ws = await watcher(client_port, agent_id, client_session.token)
        try:
            for i in range(rounds + rounds // 10):
                request = {
                    "type": "command_execute",
                    "data": {"command": "echo", "params": {"n": i}},
                }
                sent = time.perf_counter()
                await ws.send(dumps(request))
                await _command_result(ws)
                if i >= rounds // 10:  # the first tenth warms up
                    samples.append(time.perf_counter() - sent)
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            await ws.close()
    return samples


async def echo_round_trips(rounds: int) -> list[float]:
    """The baseline: bare echo round trips of a message of the same size."""
    echo = start_baseline("echo")
    try:
        samples = []
        async with connect(f"ws://127.0.0.1:{echo.port}", compression=None) as ws:
            for i in range(rounds + rounds // 10):
                request = {
                    "type": "command_execute",
                    "data": {"command": "echo", "params": {"n": i}},
                }
                sent = time.perf_counter()
                await ws.send(dumps(request))
                await ws.recv()
                if i >= rounds // 10:
                    samples.append(time.perf_counter() - sent)
        return samples
    finally:
        echo.stop()


async def commands_row(
    name: str, agent_port: int, client_port: int, sizes: Sizes, goal: str
) -> Row:
    say(name)
    base = await echo_round_trips(sizes.rounds)
    kai = await commands_kai(agent_port, client_port, sizes.rounds)
    return latency(name, kai, base, baseline="bare websockets echo round trip", goal=goal)


def _chunk(stream_id: str, index: int) -> str:
    return dumps({"type": "stream_chunk", "streamId": stream_id, "index": index, "chunk": WORD})


async def _count_chunks(ws: ClientConnection, *, end: str) -> int:
    """Count ``stream_chunk`` messages up to the one that contains ``end``."""
    seen = 0
    async for raw in ws:
        text = raw if isinstance(raw, str) else raw.decode()
        if end in text:
            return seen
        if '"stream_chunk"' in text:
            seen += 1
    raise RuntimeError("the socket closed before the stream ended")


async def _prompt(agent: ClientConnection) -> str:
    while True:
        message = orjson.loads(await agent.recv())
        if message["type"] == "prompt":
            return str(message["streamId"])


async def streams_kai(port: int, chunks: int) -> float:
    """Chunks per second from a raw agent's first ``stream_chunk`` to the client's last event."""
    session = await login(port)
    agent_id, token = await session.create_agent(f"streams-{uuid.uuid4().hex[:6]}")
    async with raw_agent(port, token, streaming=True) as agent:
        ws = await watcher(port, agent_id, session.token)
        counting = asyncio.create_task(_count_chunks(ws, end='"done":true'))
        async with httpx.AsyncClient(base_url=session.base, headers=session.headers) as client:
            opened = await client.post(
                f"/api/agents/{agent_id}/stream-prompt", json={"prompt": "Tell me a story"}
            )
            opened.raise_for_status()
        stream_id = await _prompt(agent)
        started = time.perf_counter()
        for index in range(chunks):
            await agent.send(_chunk(stream_id, index))
        end = {"type": "stream_end", "streamId": stream_id, "status": "completed", "chunks": chunks}
        await agent.send(dumps(end))
        seen = await counting
        elapsed = time.perf_counter() - started
        await ws.close()
    if seen != chunks:
        raise RuntimeError(f"the client saw {seen} of {chunks} chunks")
    return chunks / elapsed


async def streams_bare(chunks: int) -> float:
    """The same messages through a bare relay: agent → relay server → client."""
    server = start_baseline("relay")
    try:
        ws = await connect(f"ws://127.0.0.1:{server.port}/watch", compression=None, max_size=None)
        await ws.recv()  # ready
        counting = asyncio.create_task(_count_chunks(ws, end='"stream_end"'))
        async with connect(f"ws://127.0.0.1:{server.port}/publish", compression=None) as agent:
            stream_id = uuid.uuid4().hex
            started = time.perf_counter()
            for index in range(chunks):
                await agent.send(_chunk(stream_id, index))
            end = {"type": "stream_end", "streamId": stream_id, "status": "completed"}
            await agent.send(dumps(end))
            seen = await counting
            elapsed = time.perf_counter() - started
        await ws.close()
    finally:
        server.stop()
    if seen != chunks:
        raise RuntimeError(f"the bare client saw {seen} of {chunks} chunks")
    return chunks / elapsed


async def streams_row(port: int, sizes: Sizes) -> Row:
    name = f"prompt stream, {sizes.chunks:,} chunks, 1 agent to 1 client"
    say(name)
    base = await streams_bare(sizes.chunks)
    kai = await streams_kai(port, sizes.chunks)
    return rate(
        name, "chunks/s", kai, base, baseline="bare websockets relay", goal=">= 20,000 chunks/s"
    )
