"""The teams part: teams, grants between agents, peer work and the team channel."""

from __future__ import annotations

from dataclasses import dataclass

from kai.agents.live import LiveAgent
from kai.agents.part import Agents
from kai.auth.part import Auth
from kai.core import Core
from kai.kit.wiring import Wiring
from kai.protocol.agent import COORDINATION_MESSAGES
from kai.protocol.control import FeedsRecheck
from kai.realtime.part import Realtime
from kai.teams import routes, socket
from kai.teams.feeds import Feeds
from kai.teams.peers import Peers
from kai.teams.service import Teams
from kai.work.part import Work

ROUTERS = (routes.router, socket.router)


@dataclass(slots=True)
class TeamsPart:
    teams: Teams
    peers: Peers


def register(
    core: Core, wiring: Wiring, realtime: Realtime, auth: Auth, agents: Agents, work: Work
) -> TeamsPart:
    teams = Teams(auth.audit)
    feeds = Feeds(
        core.settings,
        core.db,
        teams=teams,
        registry=agents.registry,
        broker=realtime.broker,
        relay=agents.relay,
    )
    peers = Peers(
        core.settings,
        core.db,
        teams=teams,
        registry=agents.registry,
        commands=work.commands,
        tasks=work.tasks,
        streams=work.streams,
        broker=realtime.broker,
        relay=agents.relay,
        live=agents.live,
        feeds=feeds,
    )
    wiring.provide(teams=teams, peers=peers)
    wiring.on_control(FeedsRecheck, feeds.on_feeds_recheck)
    agents.messages.handle_each(COORDINATION_MESSAGES, peers.handle)

    async def drop_peer_work(live: LiveAgent, ours: bool) -> None:
        await peers.left(live)

    agents.messages.on_left(drop_peer_work)
    return TeamsPart(teams=teams, peers=peers)
