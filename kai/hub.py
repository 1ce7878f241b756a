"""The hub's app-wide resources, built once by the lifespan and reached through requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from kai.agents.live import LiveAgents
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.auth.audit import AuditLog
from kai.auth.mail import Outbox
from kai.auth.service import Identity
from kai.config import Settings
from kai.db import Database, new_id
from kai.kit.ratelimit import Limiter
from kai.ops.runtime import RuntimeConfig
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.handlers import Handlers
from kai.teams.peers import Peers
from kai.teams.service import Teams
from kai.work.commands import Commands
from kai.work.files import Files
from kai.work.streams import Streams
from kai.work.tasks import Tasks


@dataclass(slots=True)
class Hub:
    settings: Settings
    db: Database
    audit: AuditLog
    outbox: Outbox
    limiter: Limiter
    identity: Identity
    live: LiveAgents
    agents: Registry
    broker: Broker
    relay: Relay
    clients: Clients
    ws_handlers: Handlers
    ws_limiter: Limiter
    commands: Commands
    tasks: Tasks
    streams: Streams
    files: Files
    runtime: RuntimeConfig
    teams: Teams
    peers: Peers
    node_id: str = field(default_factory=new_id)


def hub_of(connection: HTTPConnection) -> Hub:
    hub: Hub = connection.state.hub
    return hub
