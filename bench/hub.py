"""Start hubs and bare servers as real processes, and talk to them as agents and watchers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
SECRET = "bench-signing-key-0123456789-abcdefghijklmnopqrstuv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


def start_hub(
    workdir: Path,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    prefix: str = "kaibench:",
) -> Process:
    port = free_port()
    data = workdir / f"hub-{port}"
    data.mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAI_")},
        "KAI_PORT": str(port),
        "KAI_DATA_DIR": str(data),
        "KAI_SECRET_KEY": SECRET,
        "KAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KAI_ARGON2_TIME_COST": "1",
        "KAI_ARGON2_MEMORY_COST": "1024",
        "KAI_ARGON2_PARALLELISM": "1",
        "KAI_LOG_LEVEL": "WARNING",
        "KAI_WS_SEND_QUEUE": "1000000",
        "KAI_WS_RATE_LIMIT": "100000000",
        "KAI_AGENT_HEARTBEAT_INTERVAL": "60",
        "KAI_AGENT_HEARTBEAT_TIMEOUT": "600",
        "KAI_EVENT_WINDOW_COUNT": "100000",
        # Every client of a benchmark comes from 127.0.0.1, and one agent sends every record:
        # the limits a hub puts on one address and one agent would measure themselves.
        "KAI_MAX_CONNECTIONS": "1000000",
        "KAI_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
        "KAI_WS_UNAUTHENTICATED_PER_ADDRESS": "1000000",
        "KAI_AGENT_LOG_RECORDS_PER_WINDOW": "10000000",
        "KAI_AGENT_LOG_BYTES_PER_WINDOW": str(1024**3),
    }
    if database_url:
        env["KAI_DATABASE_URL"] = database_url
    if redis_url:
        env["KAI_REDIS_URL"] = redis_url
        env["KAI_REDIS_PREFIX"] = prefix
    log = workdir / f"hub-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kai", "serve"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Process(proc, port, log)


def start_baseline(kind: str) -> Process:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".log")[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.baselines", kind, str(port)],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"baseline {kind} did not start; see {log}")
    return Process(proc, port, log)


@dataclass
class Session:
    base: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_agent(self, name: str) -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers) as client:
            body = (await client.post("/api/agents", json={"agentData": {"name": name}})).json()
        return body["agentId"], body["agentToken"]


async def login(port: int) -> Session:
    base = f"http://127.0.0.1:{port}"
    await wait_http(f"{base}/ready")
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            "/api/auth/login",
            json={"credentials": {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}},
        )
        response.raise_for_status()
    return Session(base, response.json()["tokens"]["accessToken"]["token"])


@contextlib.asynccontextmanager
async def raw_agent(port: int, token: str, **hello: Any) -> AsyncIterator[ClientConnection]:
    """An agent speaking the protocol itself; ``hello`` adds capabilities to its hello."""
    async with connect(
        f"ws://127.0.0.1:{port}/ws/agent",
        compression=None,
        max_size=None,
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "hello", "name": "bench", **hello}))
        while orjson.loads(await ws.recv())["type"] != "hello_ack":
            pass
        yield ws


async def watcher(port: int, agent_id: str, token: str) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/agents/{agent_id}",
        compression=None,
        max_size=None,
        open_timeout=60,
        additional_headers={"Authorization": f"Bearer {token}"},
    )
    first = orjson.loads(await ws.recv())
    if first["type"] != "status_update":
        raise RuntimeError(f"unexpected first message {first}")
    return ws


def log_batch(start: int, count: int) -> str:
    records: list[dict[str, Any]] = [{"message": str(i)} for i in range(start, start + count)]
    return json.dumps({"type": "log", "records": records})


POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"


async def pg_database() -> str | None:
    """A scratch database on the local PostgreSQL (None when there is none)."""
    try:
        import asyncpg

        name = f"kai_bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(POSTGRES, timeout=3)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    except Exception:
        return None


async def drop_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES, timeout=3)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def clean_redis(url: str, pattern: str) -> None:
    """Delete the keys matching ``pattern`` that a run left behind."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def two_nodes(workdir: Path) -> AsyncIterator[tuple[Process, Process]]:
    """Two hubs sharing a scratch PostgreSQL database and the machine's Redis."""
    database = await pg_database()
    prefix = f"kaibench:{uuid.uuid4().hex[:8]}:"
    a = start_hub(workdir, database_url=database, redis_url=REDIS, prefix=prefix)
    b: Process | None = None
    try:
        await login(a.port)  # the first node migrates the database alone
        b = start_hub(workdir, database_url=database, redis_url=REDIS, prefix=prefix)
        await login(b.port)
        yield a, b
    finally:
        a.stop()
        if b is not None:
            b.stop()
        await clean_redis(REDIS, f"{prefix}*")
        if database:
            await drop_database(database)
