"""Helpers of the coordination tests: SDK agents run in this event loop, the agents they are
made of, the audit log read back, and a person watching a team channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.typing import Origin

from kai.auth.models import AuditEvent
from kai.container import Container as Hub
from kai.sdk import Agent, CommandContext, PeerError, SubtaskFailed, TaskContext
from kai.sdk.client import KaiClient
from tests.agents.support import HubServer, Person, eventually
from tests.realtime.client_support import Watcher


async def until(condition: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (it looks at this process's state, so it is cheap)."""

    async def holds() -> bool:
        return condition()

    await eventually(holds, timeout, what=what, interval=0.01)


# -- SDK agents in this event loop --------------------------------------------------------------


@dataclass
class Crew:
    """SDK agents running in this event loop (``agent.run``); all stopped and awaited at the
    end, and any of them that stopped by itself fails the test."""

    runs: list[tuple[Agent, asyncio.Task[None]]] = field(default_factory=list)

    async def start(self, agent: Agent, url: str, token: str) -> Agent:
        """Run ``agent`` against ``url`` and wait until the hub has welcomed it."""
        run = asyncio.create_task(agent.run([url], token), name=f"agent-{agent.name}")
        self.runs.append((agent, run))

        async def welcomed() -> bool:
            if run.done():
                run.result()  # raises why it stopped
                raise AssertionError(f"agent {agent.name} stopped before it was welcomed")
            return agent.connected.is_set()

        await eventually(welcomed, 10, what=f"agent {agent.name} connected", interval=0.01)
        return agent

    async def start_all(self, url: str, tokens: Mapping[str, str], *agents: Agent) -> list[Agent]:
        """Start each of ``agents`` in turn, with the token registered under its name."""
        return [await self.start(agent, url, tokens[agent.name]) for agent in agents]

    async def stop(self) -> None:
        for agent, _ in self.runs:
            agent.stop()
        results = await asyncio.gather(*(run for _, run in self.runs), return_exceptions=True)
        self.runs.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result


# -- the agents of the tests ---------------------------------------------------------------------


@dataclass
class Seen:
    """What the handlers of the test agents went through, for the test to look at."""

    started: list[str] = field(default_factory=list)  # task ids, as their handlers started
    cancelled: list[str] = field(default_factory=list)  # task or command ids cancelled
    failed: list[str] = field(default_factory=list)  # tasks whose subtasks failed under them
    updates: dict[str, list[str]] = field(default_factory=dict)  # subtask id -> its statuses
    release: asyncio.Event = field(default_factory=asyncio.Event)


def worker(name: str, seen: Seen | None = None, *, slots: int = 2) -> Agent:
    """A worker: commands ``add``, ``fail``, ``wait`` (until released); tasks ``double``,
    ``hold`` (runs until cancelled or released); prompts answered word by word."""
    seen = seen or Seen()
    agent = Agent(name, max_concurrency=slots)
    _worker_commands(agent, seen)
    _worker_tasks(agent, seen)

    @agent.prompt
    async def words(
        prompt: str, context: dict[str, Any], options: dict[str, Any]
    ) -> AsyncIterator[str]:
        if prompt == "fail":
            raise RuntimeError("no words today")
        for word in prompt.split():
            yield word

    return agent


def _worker_commands(agent: Agent, seen: Seen) -> None:
    name = agent.name

    @agent.command("add")
    async def add(params: dict[str, Any]) -> dict[str, Any]:
        return {"sum": params["a"] + params["b"], "by": name}

    @agent.command("fail")
    async def fail(params: dict[str, Any]) -> None:
        raise ValueError(f"{name} cannot do that")

    @agent.command("wait")
    async def wait(params: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        try:
            await seen.release.wait()
        except asyncio.CancelledError:
            seen.cancelled.append(ctx.command_id)
            raise
        return {"waited": name}


def _worker_tasks(agent: Agent, seen: Seen) -> None:
    name = agent.name

    @agent.task("double")
    async def double(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        seen.started.append(task.task_id)
        if params.get("fail"):
            raise ValueError("odd numbers only")
        await task.progress(0.5, "halfway")
        return {"n": 2 * params["n"], "by": name}

    @agent.task("hold")
    async def hold(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        seen.started.append(task.task_id)
        try:
            if params.get("peer"):  # holds through a subtask of its own
                return {"below": await task.peer(params["peer"]).task("hold", {})}
            await seen.release.wait()
            return {"released": name}
        except asyncio.CancelledError:
            seen.cancelled.append(task.task_id)
            raise


def coordinator(name: str, seen: Seen | None = None, *, slots: int = 4) -> Agent:
    """A coordinator: command ``ask`` delegates a command; task ``delegate`` queues one subtask
    and returns its result; ``fan`` queues ``hold`` subtasks and waits for them."""
    seen = seen or Seen()
    agent = Agent(name, max_concurrency=slots)

    @agent.command("ask")
    async def ask(params: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        answer = await ctx.peer(params["peer"]).command(
            params.get("command", "add"), params.get("params", {})
        )
        return {"answer": answer, "via": name}

    @agent.task("delegate")
    async def delegate(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        seen.started.append(task.task_id)
        handle = await task.peer(params["peer"]).submit("double", params.get("params", {}))
        try:
            result = await handle.result()
        except SubtaskFailed as failed:
            return {"subtask": handle.task_id, "failed": failed.update.get("error")}
        finally:
            seen.updates[handle.task_id] = [str(u.get("status")) for u in handle.updates]
        return {"subtask": handle.task_id, "result": result}

    @agent.task("fan")
    async def fan(params: dict[str, Any], task: TaskContext) -> list[Any]:
        seen.started.append(task.task_id)
        try:
            handles = [
                await task.peer(peer).submit("hold", {"peer": below})
                for peer, below in params["holds"]
            ]
            return [await handle.result() for handle in handles]
        except asyncio.CancelledError:
            seen.cancelled.append(task.task_id)
            raise
        except SubtaskFailed:
            seen.failed.append(task.task_id)
            raise

    return agent


async def refused(work: Any) -> PeerError:
    """The ``PeerError`` that awaiting ``work`` raises (it must raise one)."""
    try:
        await work
    except PeerError as error:
        return error
    raise AssertionError("the hub did not refuse")


async def read(agent: Agent, peer: str, prompt: str) -> list[str]:
    """The chunks of a prompt stream ``agent`` opens on ``peer``."""
    return [chunk async for chunk in agent.peer(peer).stream(prompt)]


# -- people --------------------------------------------------------------------------------------


def body(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The JSON of an answer that must have ``status``."""
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


@asynccontextmanager
async def client_of(person: Person) -> AsyncIterator[KaiClient]:
    """The client SDK, signed in as ``person``."""
    async with KaiClient(person.server.base_url, token=person.token) as kai:
        yield kai


async def register(kai: KaiClient, *names: str) -> tuple[dict[str, str], dict[str, str]]:
    """Agents named ``names``, registered for the person ``kai`` signs in as: their ids and their
    tokens (shown this once), by name."""
    ids: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for name in names:
        created = await kai.create_agent(name)
        ids[name], tokens[name] = created["agentId"], created["agentToken"]
    return ids, tokens


async def start_pair(
    kai: KaiClient,
    crew: Crew,
    url: str,
    boss: Agent,
    helper: Agent,
    *,
    grant: list[str] | None = None,
) -> tuple[Agent, str, str]:
    """Register ``boss`` and ``helper`` under their names, let the boss do ``grant`` to the helper
    (if given) and start both: the boss, and both ids."""
    ids, tokens = await register(kai, boss.name, helper.name)
    if grant is not None:
        await kai.grant(ids[boss.name], grant, target_agent_id=ids[helper.name])
    await crew.start_all(url, tokens, boss, helper)
    return boss, ids[boss.name], ids[helper.name]


async def online_everywhere(servers: list[HubServer], *agent_ids: str) -> None:
    """Wait until every node can route to the agents (their presence is in the broker)."""
    for server in servers:
        for agent_id in agent_ids:

            async def present(server: HubServer = server, agent_id: str = agent_id) -> bool:
                return await server.hub.broker.presence(agent_id) is not None

            await eventually(present, 10, what=f"agent {agent_id} present on every node")


# -- the audit log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    permission: str
    granted: bool
    user_id: str | None
    resource: str | None


async def decisions(hub: Hub, prefix: str) -> list[Decision]:
    """The permission decisions whose permission starts with ``prefix``, oldest first."""
    await hub.audit.flush()
    async with hub.db.session(write=False) as session:
        rows = await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.kind == "permission", AuditEvent.permission.startswith(prefix))
            .order_by(AuditEvent.id)
        )
        return [Decision(r.permission, r.granted, r.user_id, r.resource) for r in rows]


def between(actor: str, target: str) -> str:
    """The audited resource of a decision between two agents."""
    return f"agent:{actor} -> agent:{target}"


# -- a person watching a team channel ------------------------------------------------------------


def team_url(
    server: HubServer, team_id: str, *, since: int | None = None, epoch: str | None = None
) -> str:
    query = {k: v for k, v in (("since", since), ("epoch", epoch)) if v is not None}
    suffix = f"?{urlencode(query)}" if query else ""
    return f"ws://127.0.0.1:{server.port}/ws/teams/{team_id}{suffix}"


@asynccontextmanager
async def watch_team(
    server: HubServer,
    team_id: str,
    token: str | None,
    *,
    since: int | None = None,
    epoch: str | None = None,
    by_message: bool = False,
    origin: str | None = None,
) -> AsyncIterator[Watcher]:
    """A person's socket on ``/ws/teams/{teamId}``, the token as a Bearer header (or as the
    first message, ``by_message``)."""
    headers = {"Authorization": f"Bearer {token}"} if token and not by_message else {}
    async with connect(
        team_url(server, team_id, since=since, epoch=epoch),
        additional_headers=headers,
        origin=Origin(origin) if origin is not None else None,
        compression=None,
        open_timeout=5,
        close_timeout=1,
    ) as ws:
        watcher = Watcher(ws)
        if by_message and token is not None:
            await watcher.send({"type": "auth", "token": token})
        yield watcher


@dataclass
class Follower:
    """An agent's subscription (a team channel, a peer's events) read in the background, every
    message it yields kept in ``messages``."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def team_messages(self) -> list[dict[str, Any]]:
        return self.of_type("team_message")

    async def has(
        self, count: int, *, kind: str = "team_message", what: str = "team messages"
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` messages of ``kind`` came; returns them."""

        async def came() -> list[dict[str, Any]] | None:
            if self.task is not None and self.task.done():
                self.task.result()
                raise AssertionError(f"the subscription ended: {self.messages}")
            got = self.of_type(kind)
            return got if len(got) >= count else None

        return await eventually(came, 10, what=f"{count} {what}", interval=0.01)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@asynccontextmanager
async def collecting(subscription: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Follower]:
    """Read ``subscription`` in the background, from its first message (its snapshot) on."""
    follower = Follower()

    async def read() -> None:
        async for message in subscription:
            follower.messages.append(message)

    follower.task = asyncio.create_task(read())
    try:

        async def opened() -> bool:
            if follower.task is not None and follower.task.done():
                follower.task.result()
            return bool(follower.messages)

        await eventually(opened, 10, what="the subscription's snapshot", interval=0.01)
        yield follower
    finally:
        await follower.stop()


def following(agent: Agent, team_id: str) -> AbstractAsyncContextManager[Follower]:
    """``agent`` subscribed to the team channel, from its snapshot on."""
    return collecting(agent.team(team_id).subscribe())
