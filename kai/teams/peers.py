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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.live import LiveAgent, LiveAgents
from kai.agents.models import Agent
from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer
from kai.auth.models import User
from kai.config import Settings
from kai.db import Database
from kai.errors import BadRequest, KaiError, NotFound
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
from kai.realtime.connection import ClientConnection, CloseCode, Who
from kai.realtime.events import dumps, team_log
from kai.teams.models import Team, TeamMember
from kai.teams.service import Teams
from kai.work.commands import Commands
from kai.work.models import PRIORITIES, PRIORITY_NAMES, Task
from kai.work.streams import KEEPALIVE_ITEM, Streams
from kai.work.tasks import Tasks

log = logging.getLogger("kai.teams.peers")

UNKNOWN_PEER = "Unknown peer"
FEED_PREFIXES = ("team:", "agent:")


class Refused(Exception):
    """A coordination request the hub will not carry out; the text goes back to the agent."""


class FeedSink:
    """An agent's feed as a connection's sink, so that a feed reuses the client cursor: each
    event goes to the agent wrapped as ``{"type": "feed", "feed": ..., "event": ...}``."""

    def __init__(self, live: LiveAgent, feed: str, gone: Callable[[], None]) -> None:
        self.live = live
        self.prefix = '{"type":"feed","feed":' + dumps(feed) + ',"event":'
        self.feed = feed
        self.gone = gone
        self.closed = False

    async def send_text(self, text: str) -> None:
        await self.live.send_text(self.prefix + text + "}")

    async def close(self, code: int, reason: str) -> None:
        """The cursor gave up on the feed (the agent read too slowly): say so, and stop."""
        self.closed = True
        self.gone()
        await self.live.send(
            {"type": "feed_closed", "feed": self.feed, "code": code, "reason": reason}
        )


@dataclass(slots=True)
class _Feed:
    """One subscription of an agent's connection, and what it was allowed on."""

    conn: ClientConnection
    owner_id: str
    agent_id: str
    team_id: str | None
    peer_id: str | None


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
        # connection id -> feed name -> its cursor, and who may see it
        self._feeds: dict[str, dict[str, _Feed]] = {}
        self._work: dict[str, set[asyncio.Task[None]]] = {}

    # -- the socket's entry point ------------------------------------------------------------

    async def handle(self, live: LiveAgent, message: Coordination) -> None:
        """Carry out one request. Quick ones (publish, subscribe) run in order on the socket;
        ones that wait (a command's answer, a stream) run beside it."""
        kind = message.type
        if isinstance(message, TeamPublish):
            await self._answer(live, kind, message.request_id, self._publish(live, message))
        elif isinstance(message, Subscribe):
            await self._answer(live, kind, message.request_id, self._subscribe(live, message))
        elif isinstance(message, Unsubscribe):
            await self._unsubscribe(live, message.feed)
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
        for feed in self._feeds.pop(live.connection_id, {}).values():
            feed.conn.ended = True
            await feed.conn.stop()
        for task in self._work.pop(live.connection_id, set()):
            task.cancel()

    # -- who is who --------------------------------------------------------------------------

    @staticmethod
    async def _actor(session: AsyncSession, agent_id: str) -> Agent:
        actor = await session.get(Agent, agent_id)
        if actor is None:
            raise Refused("This agent no longer exists")
        owner = await session.get(User, actor.owner_id)
        if owner is None or owner.disabled:
            raise Refused("This agent's owner is disabled")
        return actor

    async def _peer(self, session: AsyncSession, actor: Agent, peer: str, action: str) -> Agent:
        """The peer named by id or by name among the owner's agents, if a grant allows
        ``action`` on it. Agents of other owners are unknown, whatever their id."""
        target = await session.get(Agent, peer)
        if target is not None and target.owner_id != actor.owner_id:
            await self.teams.decide(session, actor, target, action)  # audited as refused
            raise Refused(UNKNOWN_PEER)
        if target is None:
            named = list(
                await session.scalars(
                    select(Agent)
                    .where(Agent.owner_id == actor.owner_id, Agent.name == peer)
                    .limit(2)
                )
            )
            if not named:
                raise Refused(UNKNOWN_PEER)
            if len(named) > 1:
                raise Refused(f"Several of your agents are named {peer!r}: name the peer by id")
            target = named[0]
        decision = await self.teams.decide(session, actor, target, action)
        if not decision.granted:
            raise Refused(decision.reason)
        return target

    async def _checked(self, live: LiveAgent, peer: str, action: str) -> tuple[Agent, Agent]:
        async with self.db.session(write=False) as session:
            actor = await self._actor(session, live.agent_id)
            return actor, await self._peer(session, actor, peer, action)

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
            actor = await self._actor(session, live.agent_id)
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

    # -- channels ------------------------------------------------------------------------------

    async def _publish(self, live: LiveAgent, message: TeamPublish) -> dict[str, Any]:
        async with self.db.session(write=False) as session:
            actor = await self._actor(session, live.agent_id)
            team = await self.teams.member_of(session, actor, message.team_id)
        if team is None:
            raise Refused("This agent is not a member of that team")
        event = await self.broker.publish(
            team_log(team.id),
            {
                "type": "team_message",
                "topic": message.topic,
                "fromAgentId": actor.id,
                "fromName": actor.name,
                "data": message.data,
            },
        )
        if event is None:  # held back while the broker is away; it goes out in order later
            return {"teamId": team.id, "held": True}
        return {"teamId": team.id, "seq": event.seq, "epoch": event.epoch}

    async def _subscribe(self, live: LiveAgent, message: Subscribe) -> dict[str, Any]:
        kind, _, name = message.feed.partition(":")
        if f"{kind}:" not in FEED_PREFIXES or not name:
            raise BadRequest("feed must be team:<teamId> or agent:<peer id or name>")
        async with self.db.session(write=False) as session:
            actor = await self._actor(session, live.agent_id)
            if kind == "team":
                team = await self.teams.member_of(session, actor, name)
                if team is None:
                    raise Refused("This agent is not a member of that team")
                log_key, snapshot = team_log(team.id), "team_status"
                status = partial(self.team_status, team.id)
                team_id, peer_id = team.id, None
            else:
                target = await self._peer(session, actor, name, "watch")
                log_key, snapshot = target.id, "status_update"
                status = partial(self.registry.status_event, target.id)
                team_id, peer_id = None, target.id
        feeds = self._feeds.setdefault(live.connection_id, {})
        old = feeds.pop(message.feed, None)
        if old is not None:
            await old.conn.stop()
        conn = ClientConnection(
            FeedSink(live, message.feed, lambda: self._drop(live, message.feed)),
            who=Who(actor.owner_id, "", "agent"),
            agent_id=log_key,
            broker=self.broker,
            status=status,
            max_queue=self.settings.ws_send_queue,
            snapshot_type=snapshot,
        )
        feeds[message.feed] = _Feed(conn, actor.owner_id, actor.id, team_id, peer_id)
        await conn.start(since=message.since, epoch=message.epoch)
        return {"feed": message.feed}

    def _drop(self, live: LiveAgent, feed: str) -> None:
        dropped = self._feeds.get(live.connection_id, {}).pop(feed, None)
        if dropped is not None:
            self.relay.spawn(dropped.conn.stop())

    async def _unsubscribe(self, live: LiveAgent, feed: str) -> None:
        dropped = self._feeds.get(live.connection_id, {}).pop(feed, None)
        if dropped is not None:
            dropped.conn.ended = True
            await dropped.conn.stop()

    # -- taking rights back ---------------------------------------------------------------------

    async def on_broker_message(self, message: dict[str, Any]) -> None:
        if message.get("op") == "feeds_recheck":
            gone = message.get("teamId")
            await self.recheck(str(message.get("ownerId")), gone_team=str(gone) if gone else None)

    async def recheck(self, owner_id: str, *, gone_team: str | None = None) -> int:
        """Close the feeds of ``owner_id``'s agents on this node that their agent may no longer
        read (taken out of the team, grant revoked, team deleted); returns how many."""
        closed = 0
        for feeds in list(self._feeds.values()):
            for name, feed in list(feeds.items()):
                if feed.owner_id != owner_id:
                    continue
                if feed.team_id is not None and feed.team_id == gone_team:
                    code, reason = CloseCode.AGENT_DELETED, "Team deleted"
                elif await self._still_allowed(feed):
                    continue
                else:
                    code, reason = CloseCode.ACCESS_REVOKED, "Access revoked"
                if feeds.get(name) is feed:
                    del feeds[name]
                    feed.conn.close_soon(code, reason)  # the agent is told with feed_closed
                    self.relay.spawn(feed.conn.stop())
                    closed += 1
        return closed

    async def _still_allowed(self, feed: _Feed) -> bool:
        async with self.db.session(write=False) as session:
            if feed.team_id is not None:
                team = await session.get(Team, feed.team_id)
                member = await session.get(TeamMember, (feed.team_id, feed.agent_id))
                return team is not None and team.owner_id == feed.owner_id and member is not None
            actor = await session.get(Agent, feed.agent_id)
            target = await session.get(Agent, feed.peer_id)
            if actor is None or target is None:
                return False
            return (await self.teams.check(session, actor, target, "watch")).granted

    async def team_status(self, team_id: str) -> dict[str, Any]:
        """The snapshot that opens a team channel: the team and its members."""
        async with self.db.session(write=False) as session:
            members = (await Teams.members(session, [team_id]))[team_id]
            team = await session.get(Team, team_id)
        return {"name": team.name if team else None, "agentIds": members}


def _task_view(task: Task) -> dict[str, Any]:
    view: dict[str, Any] = {
        "taskId": task.id,
        "peerId": task.agent_id,
        "taskType": task.task_type,
        "status": task.status,
        "progress": task.progress,
        "attempt": task.attempts,
        "priority": PRIORITY_NAMES.get(task.priority, PRIORITY_NAMES[PRIORITIES["medium"]]),
        "parentTaskId": task.parent_id,
    }
    if task.message is not None:
        view["message"] = task.message
    if task.status == "succeeded":
        view["result"] = task.result
    elif task.status == "failed":
        view["error"] = task.error
    return view
