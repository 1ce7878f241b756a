"""Helpers of the agent tests: a hub on a real port, people calling it, raw agent sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kai.app import create_app
from kai.config import Settings
from kai.container import Container as Hub
from kai.kit.clock import Clock
from tests.agents.processes import AgentProcess
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Api, bearer

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout: float = 10.0,
    *,
    what: str = "the condition",
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


# -- the hub on a real port ----------------------------------------------------------------------


class HubServer:
    """The hub served by uvicorn on 127.0.0.1 in this event loop; can stop and start again."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.port = settings.port
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the hub is not running"
        return self._client

    @property
    def hub(self) -> Hub:
        assert self.app is not None, "the hub is not running"
        hub: Hub = self.app.state.hub
        return hub

    async def start(self) -> None:
        self.app = create_app(self.settings, clock=self.clock)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            ws_per_message_deflate=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        self._server = server
        self._task = asyncio.create_task(_serve(server), name=f"kai-hub-{self.port}")
        task = self._task

        async def started() -> bool:
            if task.done():
                task.result()  # raises why it stopped
                raise AssertionError("the hub stopped while starting")
            return server.started

        await eventually(started, 30, what="the hub's start", interval=0.01)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=30)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None
        self.app = None

    async def restart(self) -> None:
        """Stop the hub and start a new one on the same port and database."""
        await self.stop()
        await self.start()


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits when the lifespan or the bind fails
        raise RuntimeError(f"the hub failed to start (exit {exc.code})") from None


@asynccontextmanager
async def hub_server(settings: Settings, *, clock: Clock | None = None) -> AsyncIterator[HubServer]:
    server = HubServer(settings, clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# -- people ------------------------------------------------------------------------------------


@dataclass
class Person:
    """Someone with an access token, calling the hub over HTTP."""

    server: HubServer
    email: str
    user_id: str
    token: str

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.server.client.request(method, path, headers=bearer(self.token), **kwargs)

    async def create_agent(self, name: str = "sample", **data: Any) -> Created:
        response = await self.call(
            "POST", "/api/agents", json={"agentData": {"name": name, **data}}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return Created(body["agentId"], body["agentToken"], body)

    async def agent(self, agent_id: str) -> dict[str, Any]:
        response = await self.call("GET", f"/api/agents/{agent_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def agents(self) -> list[dict[str, Any]]:
        response = await self.call("GET", "/api/agents")
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()["agents"]
        return body

    async def logs(self, agent_id: str, **params: Any) -> dict[str, Any]:
        response = await self.call("GET", f"/api/agents/{agent_id}/logs", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_status(
        self,
        agent_id: str,
        status: str,
        timeout: float = 10.0,
        *,
        process: AgentProcess | None = None,
    ) -> dict[str, Any]:
        """Poll the agent until it reads ``status``; returns its view."""

        async def reached() -> dict[str, Any] | None:
            if process is not None and process.returncode is not None:
                raise AssertionError(f"agent process exited early:\n{process.output()}")
            view = await self.agent(agent_id)
            return view if view["status"] == status else None

        return await eventually(reached, timeout, what=f"agent {agent_id} reading {status}")

    async def wait_logs(
        self, agent_id: str, message: str, *, count: int = 1, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Poll the agent's logs until ``message`` appears ``count`` times; returns those."""

        async def arrived() -> list[dict[str, Any]] | None:
            records = (await self.logs(agent_id, limit=1000))["logs"]
            found = [r for r in records if r["message"] == message]
            return found if len(found) >= count else None

        return await eventually(arrived, timeout, what=f"{count}x log {message!r}")


@dataclass(frozen=True)
class Created:
    agent_id: str
    token: str
    body: dict[str, Any]


@dataclass
class People:
    server: HubServer

    async def admin(self) -> Person:
        body = await Api(self.server.client).login(ADMIN_EMAIL, ADMIN_PASSWORD)
        return Person(
            self.server, ADMIN_EMAIL, body["user"]["id"], body["tokens"]["accessToken"]["token"]
        )

    async def join(self, email: str, *, role: str = "user") -> Person:
        """Register ``email`` (with ``role``, set by the admin) and log in."""
        api = Api(self.server.client)
        user = (await api.register(email))["user"]
        if role != user["role"]:
            admin = await self.admin()
            response = await admin.call("PUT", f"/api/users/{user['id']}", json={"role": role})
            assert response.status_code == 200, response.text
        body = await api.login(email, PASSWORD)
        return Person(self.server, email, user["id"], body["tokens"]["accessToken"]["token"])


# -- raw agent sockets ---------------------------------------------------------------------------


def hello_message(name: str = "raw", **fields: Any) -> dict[str, Any]:
    return {"type": "hello", "name": name, **fields}


@dataclass
class RawAgent:
    """An agent speaking the protocol by hand over a real WebSocket."""

    ws: ClientConnection
    welcome: dict[str, Any] = field(default_factory=dict)

    async def send(self, message: dict[str, Any] | list[Any] | str | bytes) -> None:
        if isinstance(message, dict | list):
            await self.ws.send(orjson.dumps(message).decode())
        else:
            await self.ws.send(message)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind``, skipping heartbeat acks only."""
        while True:
            message = await self.recv(timeout)
            if message["type"] == kind:
                return message
            assert message["type"] == "heartbeat_ack", message

    async def hello(self, name: str = "raw", **fields: Any) -> dict[str, Any]:
        await self.send(hello_message(name, **fields))
        return await self.recv_type("hello_ack")

    async def heartbeat(self) -> None:
        """A heartbeat, answered: every message sent before it has been handled."""
        await self.send({"type": "heartbeat"})
        await self.recv_type("heartbeat_ack")

    def abort(self) -> None:
        """Drop the TCP connection without a close frame: a reset, as a network drop does."""
        sock = self.ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ws.transport.abort()

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """Wait for the hub to close the socket; returns its close code and reason."""

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.ws.recv()

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code, self.ws.close_reason


@asynccontextmanager
async def agent_socket(
    url: str, token: str | None, *, expect_welcome: bool = True
) -> AsyncIterator[RawAgent]:
    """A raw agent connection with ``token`` (as Bearer); the welcome is read when expected."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with connect(
        url, additional_headers=headers, compression=None, open_timeout=5, close_timeout=1
    ) as ws:
        agent = RawAgent(ws)
        if expect_welcome:
            agent.welcome = await agent.recv()
            assert agent.welcome["type"] == "welcome", agent.welcome
        yield agent


async def refused(url: str, token: str | None) -> tuple[int | None, str | None]:
    """Connect with ``token`` and return how the hub closed the socket (no welcome expected)."""
    async with agent_socket(url, token, expect_welcome=False) as agent:
        return await agent.closed()
