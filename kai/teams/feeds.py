"""Agents following a peer's events or a team's channel (feeds), publishing on a channel, and
feeds closed when the right to them is taken back, on every node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from kai.agents.live import LiveAgent
from kai.agents.models import Agent
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.config import Settings
from kai.db import Database
from kai.errors import BadRequest
from kai.protocol.agent import Subscribe, TeamPublish
from kai.protocol.control import FeedsRecheck
from kai.realtime.broker import Broker
from kai.realtime.connection import ClientConnection, CloseCode, Who
from kai.realtime.events import dumps, team_log
from kai.teams.access import Refused, actor_of, peer_of
from kai.teams.models import Team, TeamMember
from kai.teams.service import Teams

FEED_PREFIXES = ("team:", "agent:")


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


class Feeds:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        teams: Teams,
        registry: Registry,
        broker: Broker,
        relay: Relay,
    ) -> None:
        self.settings = settings
        self.db = db
        self.teams = teams
        self.registry = registry
        self.broker = broker
        self.relay = relay
        # connection id -> feed name -> its cursor, and who may see it
        self._feeds: dict[str, dict[str, _Feed]] = {}

    async def left(self, live: LiveAgent) -> None:
        """The agent's connection ended: drop its feeds."""
        for feed in self._feeds.pop(live.connection_id, {}).values():
            feed.conn.ended = True
            await feed.conn.stop()

    # -- the channel ------------------------------------------------------------------------------

    async def publish(self, live: LiveAgent, message: TeamPublish) -> dict[str, Any]:
        async with self.db.session(write=False) as session:
            actor = await actor_of(session, live.agent_id)
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

    async def subscribe(self, live: LiveAgent, message: Subscribe) -> dict[str, Any]:
        kind, _, name = message.feed.partition(":")
        if f"{kind}:" not in FEED_PREFIXES or not name:
            raise BadRequest("feed must be team:<teamId> or agent:<peer id or name>")
        async with self.db.session(write=False) as session:
            actor = await actor_of(session, live.agent_id)
            if kind == "team":
                team = await self.teams.member_of(session, actor, name)
                if team is None:
                    raise Refused("This agent is not a member of that team")
                log_key, snapshot = team_log(team.id), "team_status"
                status = partial(self.team_status, team.id)
                team_id, peer_id = team.id, None
            else:
                target = await peer_of(self.teams, session, actor, name, "watch")
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

    async def unsubscribe(self, live: LiveAgent, feed: str) -> None:
        dropped = self._feeds.get(live.connection_id, {}).pop(feed, None)
        if dropped is not None:
            dropped.conn.ended = True
            await dropped.conn.stop()

    # -- taking rights back ---------------------------------------------------------------------

    async def on_feeds_recheck(self, message: FeedsRecheck) -> None:
        await self.recheck(message.owner_id, gone_team=message.team_id)

    async def recheck(self, owner_id: str, *, gone_team: str | None = None) -> int:
        """Close the feeds of ``owner_id``'s agents on this node that their agent may no longer
        read (taken out of the team, grant revoked, team deleted); returns how many."""
        closed = 0
        for feeds in list(self._feeds.values()):
            for name, feed in list(feeds.items()):
                if feed.owner_id != owner_id:
                    continue
                if feed.team_id is not None and feed.team_id == gone_team:
                    code, reason = CloseCode.TEAM_DELETED, "Team deleted"
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
