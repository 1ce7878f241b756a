"""Write a kai agent in a few lines.

    agent = Agent("greeter", version="1.0")

    @agent.command("hello")
    async def hello(params: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        return {"greeting": f"Hello, {params.get('name', 'world')}"}

    agent.run_forever(["ws://127.0.0.1:8000/ws/agent"], token)

Handlers are declared with decorators and the capabilities the hub sees are derived from them.
The agent connects out to the hub, heartbeats, forwards its ``logging`` records, reconnects
with exponential backoff and jitter across its hub URLs, restarts when the hub asks, and
shuts down cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from kai import __version__
from kai.protocol.agent import FINAL_CLOSE_CODES, MAX_LOG_BATCH, Close
from kai.sdk.logbridge import HubLogHandler
from kai.sdk.peers import Coordinator, Peer, Team
from kai.sdk.stats import WorkStats

log = logging.getLogger("kai.sdk.connection")

F = TypeVar("F", bound=Callable[..., Any])
CommandHandler = Callable[..., Awaitable[Any] | Any]
PromptHandler = Callable[..., AsyncIterator[str]]
Hook = Callable[[], Awaitable[None] | None]

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
LOG_FLUSH_INTERVAL = 0.5


class AgentStopped(Exception):
    """The hub told the agent to stop for good (deleted, token revoked, replaced, refused)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CommandContext:
    command_id: str
    command: str
    _coordinator: Coordinator | None = field(default=None, repr=False)

    def peer(self, name: str) -> Peer:
        """Another agent of the same owner, by name or id (the owner grants what it may do)."""
        if self._coordinator is None:
            raise RuntimeError("this command is not running on a connected agent")
        return Peer(self._coordinator, name, None)


@dataclass(slots=True)
class TaskContext:
    """Given to task handlers: who the task is, and a way to report progress."""

    task_id: str
    task_type: str
    attempt: int
    _send: Callable[[dict[str, Any]], Awaitable[None]] = field(repr=False)
    _coordinator: Coordinator | None = field(default=None, repr=False)
    _subtasks: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def peer(self, name: str) -> Peer:
        """Another agent of the same owner, by name or id. Tasks queued for it are subtasks of
        this task; a re-run of this task finds the subtasks its earlier attempt queued, in
        the order they were queued, rather than queueing them again."""
        if self._coordinator is None:
            raise RuntimeError("this task is not running on a connected agent")
        peer = Peer(self._coordinator, name, self.task_id)
        peer._keys = lambda: f"subtask:{self.task_id}:{next(self._subtasks)}"
        return peer

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress between 0 and 1, with an optional message."""
        value = min(1.0, max(0.0, float(fraction)))
        await self._send(
            {
                "type": "task_progress",
                "taskId": self.task_id,
                "attempt": self.attempt,
                "progress": value,
                **({"message": message} if message else {}),
            }
        )


@dataclass(frozen=True, slots=True)
class FileInfo:
    file_id: str
    filename: str
    size: int
    sha256: str | None
    url: str | None
    metadata: dict[str, Any]
    content_type: str = "application/octet-stream"


async def _call(handler: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async handler with as many of ``args`` as it takes."""
    wanted = len(inspect.signature(handler).parameters)
    result = handler(*args[:wanted])
    if inspect.isawaitable(result):
        result = await result
    return result


class Agent:
    """An agent: its handlers, its capabilities, and the loop that keeps it connected."""

    def __init__(self, name: str, *, version: str = "0", max_concurrency: int = 1) -> None:
        self.name = name
        self.version = version
        self.max_concurrency = max_concurrency
        self.commands: dict[str, CommandHandler] = {}
        self.tasks: dict[str, CommandHandler] = {}
        self.prompt_handler: PromptHandler | None = None
        self.file_handler: CommandHandler | None = None
        self._setup: list[Hook] = []
        self._teardown: list[Hook] = []
        self.stats = WorkStats()
        self.log_handler = HubLogHandler()
        self.agent_id: str | None = None
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._send_lock = asyncio.Lock()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._token: str | None = None
        self._peers = Coordinator(self.send)

    # -- declaring ---------------------------------------------------------------------------

    def command(self, name: str | None = None) -> Callable[[F], F]:
        """Handle the command ``name`` (default: the function's name): ``(params, ctx)``."""

        def register(fn: F) -> F:
            self.commands[name or fn.__name__] = fn
            return fn

        return register

    def task(self, task_type: str | None = None) -> Callable[[F], F]:
        """Handle tasks of ``task_type``: ``(params, ctx: TaskContext)``; returns the result."""

        def register(fn: F) -> F:
            self.tasks[task_type or fn.__name__] = fn
            return fn

        return register

    def prompt(self, fn: F) -> F:
        """Handle prompt streams: an async generator ``(prompt, context, options)`` of chunks."""
        if not inspect.isasyncgenfunction(fn):
            raise TypeError("a prompt handler must be an async generator function")
        self.prompt_handler = fn
        return fn

    def on_file(self, fn: F) -> F:
        """Called with a ``FileInfo`` when a file is uploaded to this agent."""
        self.file_handler = fn
        return fn

    def setup(self, fn: F) -> F:
        """Run before connecting, and again on every restart."""
        self._setup.append(fn)
        return fn

    def teardown(self, fn: F) -> F:
        """Run on shutdown, and before every restart."""
        self._teardown.append(fn)
        return fn

    def capabilities(self) -> dict[str, Any]:
        """The ``hello`` message: what this agent declares it can do."""
        return {
            "type": "hello",
            "name": self.name,
            "version": self.version,
            "commands": sorted(self.commands),
            "taskTypes": sorted(self.tasks),
            "streaming": self.prompt_handler is not None,
            "files": self.file_handler is not None,
            "maxConcurrency": self.max_concurrency,
            "sdk": f"kai-python/{__version__}",
        }

    # -- working with peers --------------------------------------------------------------------

    def peer(self, name: str) -> Peer:
        """Another agent of the same owner, by name or id, as its grants allow this one."""
        return Peer(self._peers, name, None)

    def team(self, team_id: str) -> Team:
        """A team this agent is a member of: publish on its channel, or follow it."""
        return Team(self._peers, team_id)

    # -- running -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the agent to shut down cleanly."""
        self._stop.set()

    def run_forever(self, urls: Sequence[str], token: str) -> None:
        """Run until SIGINT/SIGTERM or until the hub says stop (blocking)."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, self.stop)
            await self.run(urls, token)

        asyncio.run(main())

    async def run(self, urls: Sequence[str], token: str) -> None:
        """Connect and serve until ``stop()``; raises ``AgentStopped`` if the hub says stop."""
        if not urls:
            raise ValueError("at least one hub URL is needed")
        self._token = token
        self._stop.clear()  # an agent stopped once may run again
        root = logging.getLogger()
        root.addHandler(self.log_handler)
        try:
            await self._run_hooks(self._setup)
            await self._connect_loop(list(urls), token)
        finally:
            root.removeHandler(self.log_handler)
            await self._cancel_work()
            await self._run_hooks(self._teardown)

    async def _connect_loop(self, urls: list[str], token: str) -> None:
        failures = 0
        index = 0
        while not self._stop.is_set():
            url = urls[index % len(urls)]
            outcome = await self._session(url, token)
            if outcome == "stop":
                return
            if outcome == "restart":
                failures = 0
                continue  # the hub that asked for it is up: back to it at once
            index += 1  # the connection failed or dropped: the next URL in turn
            if outcome == "served":
                failures = 0
            failures += 1
            delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(failures, 10)))
            log.info("reconnecting to the hub in %.2fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self, url: str, token: str) -> str:
        """One connection: 'stop', 'restart', 'served' (was online) or 'failed'."""
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with connect(
                url,
                additional_headers=headers,
                compression=None,
                open_timeout=10,
                max_size=16 * 1024 * 1024,
                ping_interval=20,
                ping_timeout=20,
            ) as ws:
                return await self._serve(ws)
        except AgentStopped:
            raise
        except InvalidStatus as exc:
            log.warning("hub at %s refused the connection: HTTP %s", url, exc.response.status_code)
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
            log.warning("hub at %s unreachable: %s", url, type(exc).__name__)
        finally:
            self._ws = None
            self.connected.clear()
            self._peers.disconnected()
        return "failed"

    async def _serve(self, ws: ClientConnection) -> str:
        self._ws = ws
        try:
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            return self._closed(ws)  # a refused token (1008) closes before the welcome: stop
        if welcome.get("type") != "welcome":
            raise ConnectionError("the hub did not welcome this agent")
        self.agent_id = welcome["agentId"]
        interval = float(welcome.get("heartbeatInterval", 10))
        await self.send(self.capabilities())
        workers = [
            asyncio.create_task(self._heartbeats(interval)),
            asyncio.create_task(self._ship_logs()),
        ]
        stopper = asyncio.create_task(self._stop.wait())
        reader = asyncio.create_task(self._read(ws))
        try:
            done, _ = await asyncio.wait({stopper, reader}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                await self._flush_logs()
                await ws.close(Close.NORMAL, "Agent shutting down")
                return "stop"
            outcome: str = reader.result()
            return outcome
        except ConnectionClosed:
            return self._closed(ws)
        finally:
            for task in (*workers, stopper, reader):
                task.cancel()
            await asyncio.gather(*workers, stopper, reader, return_exceptions=True)

    def _closed(self, ws: ClientConnection) -> str:
        code = ws.close_code if ws.close_code is not None else Close.SERVER_ERROR
        reason = ws.close_reason or ""
        if code in FINAL_CLOSE_CODES:
            raise AgentStopped(code, reason)
        if not self._stop.is_set():  # else the agent closed it itself, shutting down
            log.warning("hub closed the connection: %s %s", code, reason)
        return "served" if self.connected.is_set() else "failed"

    async def _read(self, ws: ClientConnection) -> str:
        try:
            async for raw in ws:
                try:
                    message = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("the hub sent a frame that is not JSON; ignored")
                    continue
                if not isinstance(message, dict):
                    continue
                outcome = await self._dispatch(message)
                if outcome is not None:
                    return outcome
        except ConnectionClosed:
            pass
        return self._closed(ws)

    async def send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected to the hub")
        async with self._send_lock:
            await ws.send(orjson.dumps(message).decode())

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.send(
                {"type": "heartbeat", "health": "healthy", "metrics": self.stats.as_message()}
            )

    async def _ship_logs(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            await self._flush_logs()

    async def _flush_logs(self) -> None:
        while len(self.log_handler):
            batch = self.log_handler.take(MAX_LOG_BATCH)
            try:
                await self.send({"type": "log", "records": batch})
            except BaseException:  # cancelled while sending, too: the batch is not lost
                self.log_handler.put_back(batch)
                raise

    # -- messages from the hub ---------------------------------------------------------------

    async def _dispatch(self, message: dict[str, Any]) -> str | None:
        if self._peers.on_message(message):
            return None
        kind = message.get("type")
        if kind == "hello_ack":
            self.connected.set()
            log.info("connected to the hub as agent %s", self.agent_id)
            await self._peers.connected()
        elif kind == "restart":
            await self._restart()
            return "restart"
        elif kind == "command":
            self._spawn(str(message.get("commandId")), self._command(message))
        elif kind == "task":
            self._spawn(str(message.get("taskId")), self._task(message))
        elif kind == "prompt":
            self._spawn(str(message.get("streamId")), self._prompt(message))
        elif kind == "file":
            self._spawn(str(message.get("fileId")), self._file(message))
        elif kind == "cancel":
            running = self._running.get(str(message.get("id")))
            if running is not None:
                running.cancel()
        elif kind == "error":
            log.warning(
                "hub reported an error: %s %s", message.get("error"), message.get("details", "")
            )
        return None

    async def _restart(self) -> None:
        log.info("restarting on the hub's request")
        await self._flush_logs()
        await self._cancel_work()
        await self._run_hooks(self._teardown)
        await self._run_hooks(self._setup)
        if self._ws is not None:
            await self._ws.close(Close.RESTART, "Restarting")

    def _spawn(self, key: str, work: Awaitable[None]) -> None:
        # The same id again is a re-run (a task whose lease the hub gave up on): the hub takes
        # only the newest attempt's result, so the older one stops here.
        older = self._running.get(key)
        if older is not None:
            older.cancel()

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("handling %s failed", key)
            finally:
                if self._running.get(key) is task:
                    del self._running[key]

        task = asyncio.create_task(guarded())
        self._running[key] = task

    async def _cancel_work(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _command(self, message: dict[str, Any]) -> None:
        command_id = str(message.get("commandId"))
        name = str(message.get("command"))
        handler = self.commands.get(name)
        started = time.perf_counter()
        reply: dict[str, Any] = {"type": "command_result", "commandId": command_id}
        if handler is None:
            reply.update(success=False, error=f"Unknown command: {name}")
        else:
            try:
                context = CommandContext(command_id, name, self._peers)
                result = await _call(handler, message.get("params") or {}, context)
                reply.update(success=True, result=result)
            except Exception as exc:
                log.warning("command %s failed: %s", name, exc)
                reply.update(success=False, error=str(exc) or type(exc).__name__)
        elapsed = time.perf_counter() - started
        self.stats.record("command", ok=bool(reply["success"]), seconds=elapsed)
        reply["executionTime"] = round(elapsed, 6)
        await self.send(reply)

    async def _task(self, message: dict[str, Any]) -> None:
        task_id = str(message.get("taskId"))
        task_type = str(message.get("taskType"))
        handler = self.tasks.get(task_type)
        attempt = int(message.get("attempt", 1))
        ctx = TaskContext(task_id, task_type, attempt, self.send, self._peers)
        reply: dict[str, Any] = {"type": "task_result", "taskId": task_id, "attempt": attempt}
        async with self._slots:
            started = time.perf_counter()
            if handler is None:
                reply.update(success=False, error=f"Unknown task type: {task_type}")
            else:
                try:
                    result = await _call(handler, message.get("params") or {}, ctx)
                    reply.update(success=True, result=result)
                except Exception as exc:
                    log.warning("task %s failed: %s", task_id, exc)
                    reply.update(success=False, error=str(exc) or type(exc).__name__)
            self.stats.record(
                "task", ok=bool(reply["success"]), seconds=time.perf_counter() - started
            )
        await self.send(reply)

    async def _prompt(self, message: dict[str, Any]) -> None:
        stream_id = str(message.get("streamId"))
        handler = self.prompt_handler
        end: dict[str, Any] = {"type": "stream_end", "streamId": stream_id, "status": "completed"}
        index = 0
        try:
            if handler is None:
                raise RuntimeError("this agent does not take prompts")
            generator = handler(
                message.get("prompt", ""),
                message.get("context") or {},
                message.get("options") or {},
            )
            async for chunk in generator:
                await self.send(
                    {
                        "type": "stream_chunk",
                        "streamId": stream_id,
                        "index": index,
                        "chunk": str(chunk),
                    }
                )
                index += 1
        except asyncio.CancelledError:
            end.update(status="cancelled", chunks=index)
            await self.send(end)
            raise
        except Exception as exc:
            log.warning("prompt stream %s failed: %s", stream_id, exc)
            end.update(status="failed", error=str(exc) or type(exc).__name__)
        end["chunks"] = index
        await self.send(end)

    async def _file(self, message: dict[str, Any]) -> None:
        if self.file_handler is None:
            return
        info = FileInfo(
            file_id=str(message.get("fileId")),
            filename=str(message.get("filename")),
            size=int(message.get("size", 0)),
            sha256=message.get("sha256"),
            url=message.get("url"),
            metadata=message.get("metadata") or {},
            content_type=str(message.get("contentType") or "application/octet-stream"),
        )
        await _call(self.file_handler, info)

    async def download(self, file: FileInfo, destination: Path) -> Path:
        """Fetch an uploaded file into ``destination`` with this agent's token, checking its
        size and SHA-256; a mismatch removes what was written and raises ``ValueError``."""
        if file.url is None or self._token is None:
            raise ValueError("this file has no download URL, or the agent is not running")
        digest = hashlib.sha256()
        size = 0
        headers = {"Authorization": f"Bearer {self._token}"}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client,
            client.stream("GET", file.url, headers=headers) as response,
        ):
            response.raise_for_status()
            with destination.open("wb") as out:
                async for chunk in response.aiter_bytes(256 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(out.write, chunk)
        if size != file.size or (file.sha256 and digest.hexdigest() != file.sha256):
            destination.unlink(missing_ok=True)
            raise ValueError(f"download of {file.file_id} does not match its size or SHA-256")
        return destination

    @staticmethod
    async def _run_hooks(hooks: list[Hook]) -> None:
        for hook in hooks:
            result = hook()
            if inspect.isawaitable(result):
                await result
