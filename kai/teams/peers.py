"""Agents working with their peers through their own connections.

An agent asks the hub, over its socket, to send a command to a peer, queue a task for it, open a
prompt stream on it, follow its events, or publish on a team's channel. Each request is checked
against the owner's grants (and audited) and then goes through the same routing, queue,
deadlines and event logs as work from people, so it works the same on one node and across nodes.
Answers come back as ``peer_reply`` with the request's id; what follows later (subtask updates,
stream chunks, feed events) comes as messages of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from kai.agents.live import LiveAgent, LiveAgents
from kai.agents.models import Agent
from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer
from kai.config import Settings
from kai.db import Database
from kai.errors import KaiError, NotFound
from kai.kit.counters import COUNTS
from kai.protocol.agent import (
    Coordination,
    PeerCommand,
    PeerStream,
    PeerTask,
    PeerTaskCancel,
    PeerTaskStatus,
    Subscribe,
    TeamPublish,
    Unsubscribe,
)
from kai.realtime.broker import Broker
from kai.teams.access import Refused, actor_of, peer_of
from kai.teams.feeds import Feeds
from kai.teams.service import Teams
from kai.work.commands import Commands
from kai.work.models import PRIORITIES, PRIORITY_NAMES, Task
from kai.work.streams import KEEPALIVE_ITEM, Streams
from kai.work.tasks import Tasks
from kai.work.wire import task_state

log = logging.getLogger("kai.teams.peers")


class Peers:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        teams: Teams,
        registry: Registry,
        commands: Commands,
        tasks: Tasks,
        streams: Streams,
        broker: Broker,
        relay: Relay,
        live: LiveAgents,
        feeds: Feeds,
    ) -> None:
        self.settings = settings
        self.db = db
        self.teams = teams
        self.registry = registry
        self.commands = commands
        self.tasks = tasks
        self.streams = streams
        self.broker = broker
        self.relay = relay
        self.live = live
        self.feeds = feeds
        self._work: dict[str, set[asyncio.Task[None]]] = {}

    # -- the socket's entry point ------------------------------------------------------------

    async def handle(self, live: LiveAgent, message: Coordination) -> None:
        """Carry out one request. Quick ones (publish, subscribe) run in order on the socket;
        ones that wait (a command's answer, a stream) run beside it."""
        kind = message.type
        if isinstance(message, TeamPublish):
            await self._answer(live, kind, message.request_id, self.feeds.publish(live, message))
        elif isinstance(message, Subscribe):
            await self._answer(live, kind, message.request_id, self.feeds.subscribe(live, message))
        elif isinstance(message, Unsubscribe):
            await self.feeds.unsubscribe(live, message.feed)
        else:
            work = self._answer(live, kind, message.request_id, self._request(live, message))
            self._beside(live, work)

    def _beside(self, live: LiveAgent, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        running = self._work.setdefault(live.connection_id, set())
        running.add(task)
        task.add_done_callback(running.discard)

    async def _request(self, live: LiveAgent, message: Coordination) -> dict[str, Any]:
        if isinstance(message, PeerCommand):
            return await self._command(live, message)
        if isinstance(message, PeerTask):
            return await self._task(live, message)
        if isinstance(message, PeerTaskStatus):
            return await self._task_status(live, message.task_id)
        if isinstance(message, PeerTaskCancel):
            return await self._task_cancel(live, message.task_id)
        if isinstance(message, PeerStream):
            return await self._stream(live, message)
        raise Refused(f"Unexpected message {message.type}")

    async def _answer(
        self,
        live: LiveAgent,
        kind: str,
        request_id: str | None,
        work: Awaitable[dict[str, Any]],
    ) -> None:
        """Run ``work``; answer with ``peer_reply`` (ok with its result, or the error)."""
        try:
            result = await work
            reply: dict[str, Any] = {"type": "peer_reply", "ok": True, **result}
            outcome = "ok"
        except Refused as exc:
            reply = {"type": "peer_reply", "ok": False, "error": str(exc)}
            outcome = "refused"
        except KaiError as exc:
            reply = {"type": "peer_reply", "ok": False, "error": str(exc), "status": exc.status}
            outcome = "refused" if exc.status < 500 else "failed"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent %s: coordination request failed", live.agent_id)
            reply = {"type": "peer_reply", "ok": False, "error": "Request handling failed"}
            outcome = "failed"
        COUNTS.peer_requests[kind, outcome] += 1
        if request_id is None and reply["ok"]:
            return  # nobody asked for the answer; a refusal is always told
        reply["requestId"] = request_id
        try:
            await live.send(reply)
        except Exception:
            log.info("agent %s left before its answer", live.agent_id)

    async def left(self, live: LiveAgent) -> None:
        """The agent's connection ended: drop its feeds and what it was waiting for."""
        await self.feeds.left(live)
        for task in self._work.pop(live.connection_id, set()):
            task.cancel()

    async def _checked(self, live: LiveAgent, peer: str, action: str) -> tuple[Agent, Agent]:
        async with self.db.session(write=False) as session:
            actor = await actor_of(session, live.agent_id)
            return actor, await peer_of(self.teams, session, actor, peer, action)

    # -- what the channel part does for the routes and other nodes ---------------------------

    async def recheck(self, owner_id: str, *, gone_team: str | None = None) -> int:
        return await self.feeds.recheck(owner_id, gone_team=gone_team)

    async def team_status(self, team_id: str) -> dict[str, Any]:
        return await self.feeds.team_status(team_id)

    # -- work ----------------------------------------------------------------------------------

    async def _command(self, live: LiveAgent, message: PeerCommand) -> dict[str, Any]:
        actor, target = await self._checked(live, message.peer, "command")
        timeout = message.timeout or self.settings.command_timeout
        outcome = await self.commands.execute(
            Viewer(actor.owner_id, False),
            target.id,
            command=message.command,
            parameters=message.params,
            timeout=timeout,
            via="agent",
            source_agent_id=actor.id,
        )
        return {
            "peerId": target.id,
            "commandId": outcome.command_id,
            "success": outcome.success,
            "result": outcome.result,
            "error": outcome.error,
            "executionTime": round(outcome.execution_time, 6),
        }

    async def _task(self, live: LiveAgent, message: PeerTask) -> dict[str, Any]:
        actor, target = await self._checked(live, message.peer, "task")
        if message.parent_task_id is not None:
            async with self.db.session(write=False) as session:
                parent = await session.get(Task, message.parent_task_id)
            if parent is None or parent.agent_id != actor.id or parent.status != "running":
                raise Refused("parentTaskId must be a task this agent is running")
        task, replayed = await self.tasks.create(
            Viewer(actor.owner_id, False),
            target.id,
            task_type=message.task_type,
            parameters=message.params,
            priority=message.priority,
            idempotency_key=message.idempotency_key,
            max_attempts=message.max_attempts,
            parent_id=message.parent_task_id,
            source_agent_id=actor.id,
        )
        return {**_task_view(task), "replayed": replayed}

    async def _own_task(self, live: LiveAgent, task_id: str) -> Task:
        async with self.db.session(write=False) as session:
            task = await session.get(Task, task_id)
        if task is None or task.source_agent_id != live.agent_id:
            raise NotFound("Task not found")
        return task

    async def _task_status(self, live: LiveAgent, task_id: str) -> dict[str, Any]:
        return _task_view(await self._own_task(live, task_id))

    async def _task_cancel(self, live: LiveAgent, task_id: str) -> dict[str, Any]:
        task = await self._own_task(live, task_id)
        async with self.db.session(write=False) as session:
            actor = await actor_of(session, live.agent_id)
        cancelled, previous = await self.tasks.cancel(Viewer(actor.owner_id, False), task.id)
        return {**_task_view(cancelled), "previousStatus": previous}

    async def _stream(self, live: LiveAgent, message: PeerStream) -> dict[str, Any]:
        actor, target = await self._checked(live, message.peer, "stream")
        stream = await self.streams.open(
            Viewer(actor.owner_id, False),
            target.id,
            prompt=message.prompt,
            context=message.context,
            options=message.options,
            source_agent_id=actor.id,
        )
        self._beside(live, self._forward_stream(live, stream.id))
        return {"peerId": target.id, "streamId": stream.id}

    async def _forward_stream(self, live: LiveAgent, stream_id: str) -> None:
        """Send the stream's chunks, in order and without a gap, then its end, to the agent."""
        stream = await self.streams.state(stream_id)
        if stream is None:
            return
        async for kind, data, _ in self.streams.read(stream, 0):
            if kind == KEEPALIVE_ITEM:
                continue
            await live.send({**data, "type": f"peer_stream_{kind}"})
            if kind == "end":
                return


def _task_view(task: Task) -> dict[str, Any]:
    """A task as a peer hears of it: the socket view, with whose it is and its priority."""
    return {
        **task_state(task),
        "peerId": task.agent_id,
        "priority": PRIORITY_NAMES.get(task.priority, PRIORITY_NAMES[PRIORITIES["medium"]]),
        "parentTaskId": task.parent_id,
    }
