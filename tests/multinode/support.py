"""Helpers of the multi-node tests: ``kai serve`` processes sharing PostgreSQL and Redis, and a
watcher of one agent's events over the client WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.agents.processes import REPO_ROOT, SAMPLE, AgentProcess, child_env, spawn_agent
from tests.agents.support import eventually
from tests.helpers import bearer

# The events of an agent's log, as a watcher receives them: these carry a ``seq``.
EVENT_TYPES = frozenset({"status_update", "log_stream"})


# -- hub nodes -----------------------------------------------------------------------------------


@dataclass
class Node:
    """One ``kai serve --port P`` process; its stdout and stderr go to ``log_path``."""

    name: str
    port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    def watch_url(
        self, agent_id: str, *, since: int | None = None, epoch: str | None = None
    ) -> str:
        query = urlencode({k: v for k, v in (("since", since), ("epoch", epoch)) if v is not None})
        return f"ws://127.0.0.1:{self.port}/ws/agents/{agent_id}" + (f"?{query}" if query else "")

    def start(self, env: dict[str, str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as sink:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "kai", "serve", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env={**env, "KAI_DATA_DIR": str(self.data_dir)},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL, as in a crash: nothing of the node's shutdown runs."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count(self, text: str) -> int:
        """How many times ``text`` appears in the node's log."""
        return self.output().count(text)

    async def readiness(self) -> httpx.Response | None:
        """The answer of ``/ready``, or None while nothing listens."""
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.output()}"
            )
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            try:
                return await client.get("/ready")
            except httpx.TransportError:
                return None


def ready_with_broker(response: httpx.Response | None) -> bool:
    """``/ready`` said 200, with the database and the broker both ok."""
    if response is None or response.status_code != 200:
        return False
    checks = response.json().get("checks", {})
    return bool(checks.get("database") == "ok" and checks.get("broker") == "ok")


@dataclass
class Cluster:
    """Hub nodes sharing one database and one Redis (under one key prefix)."""

    nodes: list[Node]
    env: dict[str, str]
    directory: Path
    agents: list[AgentProcess] = field(default_factory=list)

    @classmethod
    def make(cls, directory: Path, ports: list[int], settings: dict[str, str]) -> Cluster:
        nodes = [
            Node(
                name=f"node{i}",
                port=port,
                data_dir=directory / f"node{i}-data",
                log_path=directory / f"node{i}.log",
            )
            for i, port in enumerate(ports, start=1)
        ]
        return cls(nodes, child_env(**settings), directory)

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.env)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        for node in self.nodes:

            async def ready(node: Node = node) -> bool:
                return ready_with_broker(await node.readiness())

            await eventually(ready, timeout, what=f"{node.name} ready", interval=0.1)

    def start_agent(self, token: str, urls: list[str], *, target: str = SAMPLE) -> AgentProcess:
        """``kai agent run TARGET --url U1 --url U2 ...``: tries the URLs in that order."""
        output = self.directory / f"agent-{len(self.agents)}.log"
        process = spawn_agent(output, token, urls, target=target)
        self.agents.append(process)
        return process

    def kill_all(self) -> None:
        """Kill every agent process and every node, whatever state they are in."""
        for process in self.agents:
            process.kill()
        for node in self.nodes:
            node.kill()

    def report(self) -> str:
        parts = []
        for node in self.nodes:
            code = node.popen.poll() if node.popen is not None else None
            parts.append(f"===== {node.name} (port {node.port}, exit {code}) =====")
            parts.append(node.output())
        for i, process in enumerate(self.agents):
            parts.append(f"===== agent {i} (exit {process.returncode}) =====")
            parts.append(process.output())
        return "\n".join(parts)


# -- watching an agent -----------------------------------------------------------------------------


@dataclass
class Watcher:
    """A client WebSocket on ``/ws/agents/{id}``, collecting every message in the background."""

    url: str
    token: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    ws: ClientConnection | None = None
    _reader: asyncio.Task[None] | None = None

    async def open(self) -> Watcher:
        self.ws = await connect(
            self.url,
            additional_headers=bearer(self.token),
            compression=None,
            open_timeout=10,
            close_timeout=2,
        )
        self._reader = asyncio.create_task(self._read(self.ws))
        return self

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                message = orjson.loads(raw)
                assert isinstance(message, dict), message
                self.messages.append(message)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.ws = self._reader = None

    @property
    def closed(self) -> bool:
        return self._reader is None or self._reader.done()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The agent's events received, the opening snapshot left out."""
        return [m for m in self.messages if m.get("type") in EVENT_TYPES and not m.get("snapshot")]

    @property
    def last(self) -> tuple[int, str]:
        """The seq and epoch to resume from: those of the last message that carried them."""
        stamped = [m for m in self.messages if "seq" in m]
        assert stamped, "nothing received yet"
        return int(stamped[-1]["seq"]), str(stamped[-1]["epoch"])

    def statuses(self, *, after: int = 0) -> list[str]:
        """The statuses of the ``status_update`` events among the messages from ``after`` on."""
        return [
            str(m["status"])
            for m in self.messages[after:]
            if m.get("type") == "status_update" and not m.get("snapshot")
        ]

    async def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        after: int = 0,
        timeout: float = 15.0,
        what: str = "a matching message",
    ) -> dict[str, Any]:
        """The first message from index ``after`` on that satisfies ``predicate``."""

        async def found() -> dict[str, Any] | None:
            for message in self.messages[after:]:
                if predicate(message):
                    return message
            if self.closed:
                raise AssertionError(f"the watcher closed before {what}: {self.messages}")
            return None

        return await eventually(found, timeout, what=what, interval=0.02)


def gap_free(messages: list[dict[str, Any]]) -> list[int]:
    """Assert the seq-carrying messages run ``n, n+1, n+2...`` in one epoch; returns the seqs.

    The opening snapshot carries the seq the watcher starts from; every event then adds one.
    A ``resync_required`` would mean the hub lost events: it fails the check too.
    """
    stamped = [m for m in messages if "seq" in m]
    assert stamped, "no events"
    kinds = {m["type"] for m in stamped}
    assert "resync_required" not in kinds, stamped
    seqs = [int(m["seq"]) for m in stamped]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate: {seqs}"
    epochs = {m["epoch"] for m in stamped}
    assert len(epochs) == 1, f"the epoch changed: {epochs}"
    return seqs


def in_order(seen: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` appears in ``seen`` as a subsequence (in order, maybe not adjacent)."""
    rest = iter(seen)
    return all(any(item == want for item in rest) for want in wanted)
