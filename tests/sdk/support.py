"""A small hub for the SDK tests: a real websockets server playing the hub's side of
docs/agent-protocol.md, and a way to run an SDK agent in this event loop against it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from kai.protocol.agent import AGENT_MESSAGE, AGENT_MESSAGE_TYPES, PROTOCOL_VERSION
from kai.sdk import Agent, AgentStopped
from tests.agents.support import eventually
from tests.services import free_port

TOKEN = "kai_agent_sdk-test-token"
AGENT_ID = "0b0e6f3c-agent"

# The work replies of "Work messages (hub → agent)": required fields, then optional ones.
WORK_REPLIES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "command_result": (
        frozenset({"commandId", "success", "executionTime"}),
        frozenset({"result", "error"}),
    ),
    "task_progress": (frozenset({"taskId", "progress"}), frozenset({"message"})),
    "task_result": (frozenset({"taskId", "success"}), frozenset({"result", "error"})),
    "stream_chunk": (frozenset({"streamId", "index", "chunk"}), frozenset()),
    "stream_end": (frozenset({"streamId", "status", "chunks"}), frozenset({"error"})),
}


async def until(condition: Callable[[], bool], timeout: float = 5.0, *, what: str) -> None:
    """Poll ``condition`` until it holds, or fail after ``timeout``."""

    async def check() -> bool:
        return condition()

    await eventually(check, timeout, what=what, interval=0.01)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def violation(message: dict[str, Any]) -> str | None:
    """Why ``message`` (agent → hub) breaks the protocol, or None."""
    kind = message.get("type")
    if kind in AGENT_MESSAGE_TYPES:
        try:
            AGENT_MESSAGE.validate_python(message)
        except ValidationError as exc:
            return f"invalid {kind}: {exc}"
        return None
    if kind not in WORK_REPLIES:
        return f"unknown message type {kind!r}"
    required, optional = WORK_REPLIES[kind]
    fields = set(message) - {"type"}
    if not required <= fields:
        return f"{kind} lacks {sorted(required - fields)}: {message}"
    if not fields <= required | optional:
        return f"{kind} has unknown fields {sorted(fields - required - optional)}: {message}"
    if kind in ("command_result", "task_result"):
        outcome = "result" if message["success"] else "error"
        if set(message) & {"result", "error"} != {outcome}:
            return f"{kind} with success={message['success']} must carry {outcome} only"
    return None


@dataclass(eq=False)
class HubSide:
    """One agent connection, as the hub sees it."""

    ws: ServerConnection
    number: int
    hello: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def headers(self) -> dict[str, str]:
        assert self.ws.request is not None
        return {k.lower(): v for k, v in self.ws.request.headers.raw_items()}

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """The messages of type ``kind`` received so far with those field values, in order."""
        return [
            m
            for m in self.messages
            if m["type"] == kind and all(m.get(k) == v for k, v in fields.items())
        ]

    async def first(self, kind: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The first message of type ``kind`` with those field values, once it arrived."""
        return (await self.several(kind, 1, timeout, **fields))[0]

    async def several(
        self, kind: str, count: int, timeout: float = 5.0, **fields: Any
    ) -> list[dict[str, Any]]:
        """The first ``count`` messages of type ``kind`` with those field values."""

        async def arrived() -> list[dict[str, Any]] | None:
            found = self.of(kind, **fields)
            return found[:count] if len(found) >= count else None

        return await eventually(
            arrived, timeout, what=f"{count}x {kind} {fields or ''}", interval=0.01
        )

    def logs(self) -> list[dict[str, Any]]:
        """Every log record received on this connection, in order."""
        return [r for m in self.of("log") for r in m["records"]]

    async def log_record(self, message: str, timeout: float = 5.0) -> dict[str, Any]:
        async def arrived() -> dict[str, Any] | None:
            return next((r for r in self.logs() if r["message"] == message), None)

        return await eventually(arrived, timeout, what=f"log {message!r}", interval=0.01)


class FakeHub:
    """A real WebSocket server on 127.0.0.1 that speaks the hub's side of the agent protocol:
    ``welcome``, read ``hello``, answer ``hello_ack``; then records what the agent sends.

    ``refuse`` closes new connections at once with that code (a refused token);
    ``welcome_gate``, when cleared, holds new connections before their welcome."""

    def __init__(self, *, heartbeat_interval: float = 30.0) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.connections: list[HubSide] = []
        self.events: list[str] = []
        self.violations: list[str] = []
        self.refuse: tuple[int, str] | None = None
        self.welcome_gate = asyncio.Event()
        self.welcome_gate.set()
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def connection(self, number: int = 1, timeout: float = 5.0) -> HubSide:
        """The ``number``-th connection (from 1), once its ``hello`` arrived."""

        async def greeted() -> HubSide | None:
            if len(self.connections) < number:
                return None
            side = self.connections[number - 1]
            return side if side.hello is not None else None

        return await eventually(greeted, timeout, what=f"connection {number}", interval=0.01)

    async def _handle(self, ws: ServerConnection) -> None:
        side = HubSide(ws, len(self.connections) + 1)
        self.connections.append(side)
        try:
            if self.refuse is not None:
                await ws.close(*self.refuse)
                return
            await self.welcome_gate.wait()
            await side.send(
                {
                    "type": "welcome",
                    "agentId": AGENT_ID,
                    "connectionId": f"connection-{side.number}",
                    "protocolVersion": PROTOCOL_VERSION,
                    "heartbeatInterval": self.heartbeat_interval,
                    "heartbeatTimeout": self.heartbeat_interval * 3,
                    "maxMessageBytes": 1024 * 1024,
                }
            )
            hello = orjson.loads(await ws.recv())
            self._check(hello)
            if hello.get("type") != "hello":
                self.violations.append(f"first message is not hello: {hello}")
                return
            side.hello = hello
            self.events.append(f"hello {side.number}")
            await side.send({"type": "hello_ack", "status": "online", "timestamp": now()})
            async for raw in ws:
                if not isinstance(raw, str):
                    self.violations.append("a binary frame")
                    continue
                message = orjson.loads(raw)
                self._check(message)
                side.messages.append(message)
                if message["type"] == "heartbeat":
                    await side.send({"type": "heartbeat_ack", "timestamp": now()})
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            side.close_code = ws.close_code
            self.events.append(f"closed {side.number} {side.close_code}")
            side.ended.set()

    def _check(self, message: dict[str, Any]) -> None:
        problem = violation(message)
        if problem is not None:
            self.violations.append(problem)


@asynccontextmanager
async def fake_hub(*, heartbeat_interval: float = 30.0) -> AsyncIterator[FakeHub]:
    hub = FakeHub(heartbeat_interval=heartbeat_interval)
    await hub.start()
    try:
        yield hub
    finally:
        hub.welcome_gate.set()
        await hub.stop()


@asynccontextmanager
async def running(
    agent: Agent, *urls: str, token: str = TOKEN
) -> AsyncIterator[asyncio.Task[None]]:
    """``agent.run(urls, token)`` as a task of this loop; stopped with ``agent.stop()`` after."""
    task = asyncio.create_task(agent.run(list(urls), token), name=f"agent-{agent.name}")
    try:
        yield task
    finally:
        agent.stop()
        with contextlib.suppress(AgentStopped):
            await asyncio.wait_for(task, 15)


def closed_url() -> str:
    """A hub URL on a port nobody listens on: connecting is refused at once."""
    return f"ws://127.0.0.1:{free_port()}/ws/agent"
