"""The agents part: the registry, the agents connected to this node, the relay between nodes,
the agent socket, the client socket of an agent (watch), and the hosted agents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from kai.agents import routes, socket, watch
from kai.agents.hosted import Supervisor
from kai.agents.live import LiveAgents
from kai.agents.messages import AgentMessages
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.auth.part import Auth
from kai.config import HostedAgent, Settings
from kai.core import Core
from kai.kit.wiring import Wiring
from kai.protocol.agent import Close
from kai.protocol.control import AgentClose, AgentSend, Kick
from kai.realtime.part import Realtime

ROUTERS = (routes.router, socket.router, watch.router)


@dataclass(slots=True)
class Agents:
    live: LiveAgents
    relay: Relay
    registry: Registry
    supervisor: Supervisor
    messages: AgentMessages


def register(core: Core, wiring: Wiring, realtime: Realtime, auth: Auth) -> Agents:
    settings, db, broker = core.settings, core.db, realtime.broker
    live = LiveAgents()
    relay = Relay(live, broker)
    registry = Registry(settings, db=db, live=live, relay=relay, broker=broker, clock=core.clock)
    supervisor = Supervisor(db, registry, hub_url=local_ws_url(settings))
    identity = auth.identity
    identity.kicks = lambda message: relay.spawn(
        broker.broadcast(Kick.model_validate(message).wire())
    )
    identity.close_agents_of = lambda user_id: relay.close_owned_soon(
        user_id, Close.OWNER_DISABLED, "Owner disabled"
    )
    messages = AgentMessages()
    wiring.provide(agents=registry, live=live, relay=relay, agent_messages=messages)
    wiring.on_control(AgentSend, relay.on_agent_send)
    wiring.on_control(AgentClose, relay.on_agent_close)
    wiring.writer("log-writer", registry.log_writer)
    wiring.loop(
        "presence-reaper", every=settings.agent_heartbeat_interval, work=registry.expire_presence
    )
    retention = timedelta(days=settings.log_retention_days)
    wiring.loop(
        "log-retention",
        every=min(3600.0, retention.total_seconds() / 4),
        work=lambda: registry.prune_logs(older_than=retention),
    )

    async def start_hosted() -> None:
        await supervisor.start(hosted_agents(settings))

    async def disconnect() -> None:
        await supervisor.stop()
        for agent in live.all():
            await agent.close(Close.GOING_AWAY, "Hub shutting down")
        await relay.drain()

    wiring.starting(start_hosted)
    wiring.stopping(disconnect)
    return Agents(
        live=live, relay=relay, registry=registry, supervisor=supervisor, messages=messages
    )


def hosted_agents(settings: Settings) -> list[HostedAgent]:
    specs = list(settings.hosted_agents)
    if settings.demo and not any(spec.name == "demo" for spec in specs):
        specs.append(HostedAgent(name="demo", target="kai.demo:agent"))
    return specs


def local_ws_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"ws://{host}:{settings.port}/ws/agent"
