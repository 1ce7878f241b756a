"""The container: builds the parts in order, starts what they registered and stops it again.

Only the app and the CLI import it. Each part's ``register()`` builds its services from the
parts below it and hands the container (through a ``Wiring``) its control-message handlers,
loops, writers and start and stop hooks (its routers are ``ROUTERS`` beside it). A new kind
of work is one more line in ``build``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from kai.agents import part as agents_part
from kai.agents.live import LiveAgents
from kai.agents.part import Agents
from kai.agents.part import register as register_agents
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.auth import part as auth_part
from kai.auth.audit import AuditLog
from kai.auth.mail import Outbox
from kai.auth.part import Auth
from kai.auth.part import register as register_auth
from kai.auth.service import Identity
from kai.config import Settings
from kai.core import Core
from kai.db import Database, migrate
from kai.kit.clock import Clock, SystemClock
from kai.kit.loops import Loops
from kai.kit.wiring import Wiring, control_dispatcher
from kai.ops import part as ops_part
from kai.ops.part import Ops
from kai.ops.part import register as register_ops
from kai.ops.runtime import RuntimeConfig
from kai.ops.services import Node, Services, build_services
from kai.realtime import part as realtime_part
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.handlers import Handlers
from kai.realtime.part import Realtime
from kai.realtime.part import register as register_realtime
from kai.teams import part as teams_part
from kai.teams.part import TeamsPart
from kai.teams.part import register as register_teams
from kai.teams.peers import Peers
from kai.teams.service import Teams
from kai.work import part as work_part
from kai.work.commands import Commands
from kai.work.files import Files
from kai.work.part import Work
from kai.work.part import register as register_work
from kai.work.streams import Streams
from kai.work.tasks import Tasks

PARTS = (ops_part, realtime_part, auth_part, agents_part, work_part, teams_part)


def routers() -> list[APIRouter]:
    """Every part's routers, in the order the parts build."""
    return [router for part in PARTS for router in part.ROUTERS]


@dataclass(slots=True)
class Parts:
    ops: Ops
    realtime: Realtime
    auth: Auth
    agents: Agents
    work: Work
    teams: TeamsPart


@dataclass(slots=True)
class Container:
    """The built hub. Tools and tests reach its services by name; parts never see it."""

    core: Core
    wiring: Wiring
    parts: Parts
    loops: Loops = field(default_factory=Loops)
    services: Services | None = None

    @property
    def state(self) -> dict[str, Any]:
        """What every request and socket sees as ``connection.state``."""
        return dict(self.wiring.state)

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def db(self) -> Database:
        return self.core.db

    @property
    def node_id(self) -> str:
        return self.core.node_id

    @property
    def runtime(self) -> RuntimeConfig:
        return self.parts.ops.runtime

    @property
    def broker(self) -> Broker:
        return self.parts.realtime.broker

    @property
    def clients(self) -> Clients:
        return self.parts.realtime.clients

    @property
    def ws_handlers(self) -> Handlers:
        return self.parts.realtime.handlers

    @property
    def identity(self) -> Identity:
        return self.parts.auth.identity

    @property
    def audit(self) -> AuditLog:
        return self.parts.auth.audit

    @property
    def outbox(self) -> Outbox:
        return self.parts.auth.outbox

    @property
    def agents(self) -> Registry:
        return self.parts.agents.registry

    @property
    def live(self) -> LiveAgents:
        return self.parts.agents.live

    @property
    def relay(self) -> Relay:
        return self.parts.agents.relay

    @property
    def commands(self) -> Commands:
        return self.parts.work.commands

    @property
    def tasks(self) -> Tasks:
        return self.parts.work.tasks

    @property
    def streams(self) -> Streams:
        return self.parts.work.streams

    @property
    def files(self) -> Files:
        return self.parts.work.files

    @property
    def teams(self) -> Teams:
        return self.parts.teams.teams

    @property
    def peers(self) -> Peers:
        return self.parts.teams.peers


async def build(
    settings: Settings, *, run_migrations: bool = True, clock: Clock | None = None
) -> Container:
    """Open the database (migrating it) and build every part (keeping time by ``clock``)."""
    url = settings.resolved_database_url
    if run_migrations:
        await asyncio.to_thread(migrate, url)
    core = Core(settings=settings, db=Database(url), clock=clock or SystemClock())
    wiring = Wiring()
    wiring.provide(settings=settings, db=core.db, node_id=core.node_id)
    ops = register_ops(core, wiring)
    realtime = register_realtime(core, wiring)
    auth = register_auth(core, wiring, realtime)
    agents = register_agents(core, wiring, realtime, auth)
    work = register_work(core, wiring, realtime, auth, agents)
    teams = register_teams(core, wiring, realtime, auth, agents, work)
    return Container(core, wiring, Parts(ops, realtime, auth, agents, work, teams))


async def start(container: Container) -> None:
    """Start the broker, the writers, the parts' start hooks (runtime settings, first admin,
    hosted agents), the loops, and the services view of this node. (A ``kai`` admin command
    builds the container and stops it without starting it.)"""
    wiring, broker = container.wiring, container.parts.realtime.broker
    broker.on_message(control_dispatcher(wiring.controls))
    await broker.start()
    for named in wiring.writers:
        named.writer.start()
    for hook in wiring.on_start:
        await hook()
    for spec in wiring.loops:
        container.loops.start(spec.name, every=spec.every, work=spec.work)
    container.services = build_services(
        Node(
            settings=container.core.settings,
            db=container.core.db,
            broker=broker,
            outbox=container.parts.auth.outbox,
            clients=container.parts.realtime.clients,
            live=container.parts.agents.live,
            files=container.parts.work.files,
            writers=wiring.writers,
            loops=container.loops,
            supervisor=container.parts.agents.supervisor,
        )
    )


async def stop(container: Container) -> None:
    """Stop everything started, in order: loops, the parts' stop hooks (the last part built
    stops first: hosted agents and agent sockets before client sockets), the broker, the
    writers (flushing what they hold), the database."""
    await container.loops.stop()
    for hook in reversed(container.wiring.on_stop):  # the parts above first
        await hook()
    await container.parts.realtime.broker.close()
    for named in container.wiring.writers:
        await named.writer.close()
    await container.core.db.dispose()
