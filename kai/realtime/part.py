"""The realtime part: the broker (memory or Redis), the limiter beside it, the client
connections of this node and the client-socket handler registry."""

from __future__ import annotations

from dataclasses import dataclass

from kai.core import Core
from kai.kit.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from kai.kit.wiring import Wiring
from kai.protocol.control import Kick
from kai.realtime.broker import Broker, MemoryBroker, Window
from kai.realtime.clients import Clients
from kai.realtime.handlers import Handlers, default_handlers
from kai.realtime.outbox import EventOutbox
from kai.realtime.redis_broker import RedisBroker

ROUTERS = ()  # the client socket of an agent is served by the agents part


@dataclass(slots=True)
class Realtime:
    broker: Broker
    limiter: Limiter
    clients: Clients
    handlers: Handlers
    outbox: EventOutbox


def register(core: Core, wiring: Wiring) -> Realtime:
    settings = core.settings
    window = Window(count=settings.event_window_count, age=settings.event_window_age)
    broker: Broker
    limiter: Limiter
    if settings.redis_url:
        redis_broker = RedisBroker(
            settings.redis_url, node_id=core.node_id, window=window, prefix=settings.redis_prefix
        )
        broker = redis_broker
        limiter = RedisLimiter(redis_broker.redis, prefix=f"{settings.redis_prefix}bucket:")
    else:
        broker, limiter = MemoryBroker(node_id=core.node_id, window=window), MemoryLimiter()
    clients = Clients()
    # Redis keeps event logs across a node's death: only then can an event be lost between
    # the commit and the publish (kai/realtime/outbox.py).
    outbox = EventOutbox(core.db, broker, durable=bool(settings.redis_url))
    part = Realtime(
        broker=broker,
        limiter=limiter,
        clients=clients,
        handlers=default_handlers(),
        outbox=outbox,
    )
    wiring.provide(broker=broker, limiter=limiter, clients=clients, handlers=part.handlers)
    wiring.on_control(Kick, clients.on_kick)
    if outbox.durable:
        wiring.writer("event-outbox-cleaner", outbox.cleaner)
        wiring.loop("event-outbox-relay", every=2.0, work=outbox.relay_left_behind)

    async def close_clients() -> None:
        clients.close_all()

    wiring.stopping(close_clients)
    return part
