"""Fixtures and helpers of the client WebSocket tests (``/ws/agents/{agentId}``).

Hubs run on real ports (uvicorn, in this event loop), in one of two modes: ``embedded`` (one
node, SQLite, the memory broker) or ``redis`` (any number of nodes on one PostgreSQL database
and the machine's Redis, under a key prefix of the test's own that is deleted afterwards).
Watchers are real WebSocket clients; agents are raw sockets speaking the agent protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
import pytest
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from kai.config import Settings
from kai.db import Base
from kai.models import load_all
from tests.agents.support import HubServer, RawAgent
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.services import free_port, plain_dsn, redis_server

SECRET = "kai-client-socket-test-key-0123456789-abcdefghijkl"
PUBLIC_URL = "http://hub.test"  # the hub's own origin
MODES = ["embedded", "redis"]


# -- hubs in either mode -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_redis_url() -> Iterator[str]:
    """The machine's Redis (or a disposable one), shared by every test under its own prefix."""
    with redis_server() as url:
        yield url


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``redis``; a test narrows it by parametrizing ``mode`` itself."""
    value: str = request.param
    return value


class Hubs:
    """Starts hub nodes of one mode on one database (and, in Redis mode, one key prefix)."""

    def __init__(
        self, mode: str, *, database_url: str, data_dir: Path, redis_url: str | None
    ) -> None:
        self.mode = mode
        self.database_url = database_url
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.prefix = f"kaitest:{uuid.uuid4().hex}:"
        self.nodes: list[HubServer] = []

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "port": free_port(),
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "secret_key": SECRET,
            "public_base_url": PUBLIC_URL,
            "admin_email": ADMIN_EMAIL,
            "admin_password": ADMIN_PASSWORD,
            "argon2_time_cost": 1,
            "argon2_memory_cost": 1024,
            "argon2_parallelism": 1,
            "audit_flush_interval": 0.05,
            "auth_rate_limit": 1000,
            "registration": "open",
        }
        if self.redis_url is not None:
            values.update(redis_url=self.redis_url, redis_prefix=self.prefix)
        values.update(overrides)
        return Settings(**values)

    async def start(self, **overrides: Any) -> HubServer:
        """A node with these settings; in Redis mode every node shares the database and prefix."""
        if self.nodes and self.redis_url is None:
            raise AssertionError("embedded mode has one node")
        node = HubServer(self.settings(**overrides))
        self.nodes.append(node)
        await node.start()
        return node

    async def pair(self, **overrides: Any) -> tuple[HubServer, HubServer]:
        """Two nodes in Redis mode; in embedded mode the one node, twice."""
        one = await self.start(**overrides)
        return one, (await self.start(**overrides) if self.redis_url is not None else one)

    def environment(self) -> dict[str, str]:
        """The ``KAI_`` settings of these hubs, for a ``kai`` command run beside them."""
        env = {
            "KAI_DATABASE_URL": self.database_url,
            "KAI_DATA_DIR": str(self.data_dir),
            "KAI_SECRET_KEY": SECRET,
            "KAI_ARGON2_TIME_COST": "1",
            "KAI_ARGON2_MEMORY_COST": "1024",
            "KAI_ARGON2_PARALLELISM": "1",
        }
        if self.redis_url is not None:
            env.update(KAI_REDIS_URL=self.redis_url, KAI_REDIS_PREFIX=self.prefix)
        return env

    async def stop(self) -> None:
        """Stop every node, then delete the keys they left on the shared Redis."""
        try:
            results = await asyncio.gather(
                *(node.stop() for node in reversed(self.nodes)), return_exceptions=True
            )
            self.nodes.clear()
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        finally:
            if self.redis_url is not None:
                await delete_keys(self.redis_url, self.prefix)


async def delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def empty_database(url: str) -> None:
    """Empty every table of the shared PostgreSQL test database."""
    load_all()
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@dataclass(frozen=True)
class Backing:
    """What the hubs of one test stand on: a database, and Redis in Redis mode."""

    database_url: str
    redis_url: str | None


@pytest.fixture
def backing(request: pytest.FixtureRequest, mode: str, tmp_path: Path) -> Backing:
    """Embedded: a fresh SQLite file. Redis: the emptied PostgreSQL test database and Redis."""
    if mode == "embedded":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kai.db"
        shutil.copy(template, path)
        return Backing(f"sqlite+aiosqlite:///{path}", None)
    database_url: str = request.getfixturevalue("pg_database")
    asyncio.run(empty_database(database_url))
    redis_url: str = request.getfixturevalue("shared_redis_url")
    return Backing(database_url, redis_url)


@pytest.fixture
async def hubs(mode: str, backing: Backing, tmp_path: Path) -> AsyncIterator[Hubs]:
    """Hub nodes of the test's mode, stopped (and their Redis keys deleted) afterwards."""
    started = Hubs(
        mode,
        database_url=backing.database_url,
        data_dir=tmp_path / "data",
        redis_url=backing.redis_url,
    )
    try:
        yield started
    finally:
        await started.stop()


# -- watchers ------------------------------------------------------------------------------------


@dataclass
class Watcher:
    """A client watching one agent over ``/ws/agents/{agentId}``."""

    ws: ClientConnection
    received: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(orjson.dumps(message).decode() if isinstance(message, dict) else message)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"a binary frame from the hub: {raw!r}"
        message: dict[str, Any] = orjson.loads(raw)
        self.received.append(message)
        return message

    async def take(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` messages."""
        return [await self.recv(timeout) for _ in range(count)]

    async def until(self, kind: str, timeout: float = 10.0, **fields: Any) -> list[dict[str, Any]]:
        """Messages up to and including the first of type ``kind`` with these fields."""
        got = []
        while True:
            message = await self.recv(timeout)
            got.append(message)
            if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
                return got

    async def heartbeat(self) -> dict[str, Any]:
        """Send a heartbeat; the next message must be its answer (nothing else may be in flight)."""
        await self.send({"type": "heartbeat"})
        answer = await self.recv()
        assert answer["type"] == "heartbeat", answer
        return answer

    async def quiet(self, seconds: float = 0.3) -> None:
        """Nothing arrives for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            message = await self.recv(seconds)
            raise AssertionError(f"unexpected message: {message}")

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        """Read until the hub closes the socket; returns its close code and reason."""

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    raw = await self.ws.recv()
                    self.received.append(orjson.loads(raw))

        await asyncio.wait_for(drain(), timeout)
        return self.ws.close_code, self.ws.close_reason


def watch_url(
    server: HubServer, agent_id: str, *, since: int | None = None, epoch: str | None = None
) -> str:
    query = {k: v for k, v in (("since", since), ("epoch", epoch)) if v is not None}
    suffix = f"?{urlencode(query)}" if query else ""
    return f"ws://127.0.0.1:{server.port}/ws/agents/{agent_id}{suffix}"


@asynccontextmanager
async def watch(
    server: HubServer,
    agent_id: str,
    token: str | None,
    *,
    since: int | None = None,
    epoch: str | None = None,
    origin: str | None = None,
    by_message: bool = False,
    max_queue: int | None = None,
) -> AsyncIterator[Watcher]:
    """Connect to the agent's socket with ``token`` (a Bearer header, or the first message).

    The client reads whatever arrives into memory unless ``max_queue`` bounds what it buffers
    unread (then, as a real client that stops reading, it stops reading the socket).
    """
    headers = {"Authorization": f"Bearer {token}"} if token and not by_message else {}
    async with connect(
        watch_url(server, agent_id, since=since, epoch=epoch),
        additional_headers=headers,
        origin=Origin(origin) if origin is not None else None,
        compression=None,
        open_timeout=5,
        close_timeout=1,
        max_queue=max_queue,
    ) as ws:
        watcher = Watcher(ws)
        if by_message and token is not None:
            await watcher.send({"type": "auth", "token": token})
        yield watcher


async def refused_with(
    server: HubServer, agent_id: str, token: str | None, **options: Any
) -> tuple[int | None, str | None]:
    """Connect and return how the hub closed the socket; nothing may arrive before the close."""
    async with watch(server, agent_id, token, **options) as watcher:
        closed = await watcher.closed()
        assert watcher.received == [], watcher.received
        return closed


# -- agents and their events ---------------------------------------------------------------------


def records(count: int, *, start: int = 0, size: int = 0) -> list[dict[str, Any]]:
    """Log records ``rec <i>`` (padded to ``size`` characters when asked)."""
    return [
        {
            "level": "INFO",
            "message": f"rec {i} ".ljust(size, "x"),
            "logger": "test",
            "extra": {"i": i},
        }
        for i in range(start, start + count)
    ]


async def log(agent: RawAgent, count: int, *, start: int = 0) -> None:
    """The agent logs ``count`` records in one batch; returns once the hub has handled it."""
    await agent.send({"type": "log", "records": records(count, start=start)})
    await agent.heartbeat()


def check_sequence(events: list[dict[str, Any]], *, after: int, epoch: str) -> None:
    """``events`` are numbered ``after + 1, after + 2, ...`` in ``epoch``, with no gap."""
    assert [e["seq"] for e in events] == list(range(after + 1, after + 1 + len(events))), [
        (e["type"], e["seq"]) for e in events
    ]
    assert {e["epoch"] for e in events} <= {epoch}


def rss_bytes() -> int:
    """This process's resident set size now (the hub runs in this process), after handing
    freed memory back to the system: what earlier tests used and freed does not count."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)  # glibc keeps freed heap pages resident until trimmed
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
