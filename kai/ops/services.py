"""The hub's components as services an operator can see and act on (on this node).

Each service reports its state (``running`` or ``stopped``), its health, its counters and the
actions it allows. Background loops, write-behind writers and the hosted-agent supervisor can be
stopped and restarted for real; the database can be reconnected (its pool is dropped and
refilled); the broker, storage, mail and the WebSocket hub are reported only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from kai.agents.hosted import Supervisor
from kai.agents.live import LiveAgents
from kai.auth.mail import Outbox
from kai.config import Settings
from kai.db import Database
from kai.errors import Conflict, NotFound
from kai.kit.batch import BatchWriter
from kai.kit.counters import COUNTS
from kai.kit.loops import Loops
from kai.kit.wiring import NamedWriter
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.work.files import Files

Action = Literal["restart", "stop"]
CHECK_TIMEOUT = 2.0


@dataclass
class Service:
    name: str
    kind: str
    state: Callable[[], bool]
    counters: Callable[[], dict[str, Any]]
    check: Callable[[], Awaitable[None]] | None = None  # raises when unhealthy
    actions: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    async def describe(self) -> dict[str, Any]:
        running = self.state()
        health = "healthy" if running else "stopped"
        if running and self.check is not None:
            try:
                await asyncio.wait_for(self.check(), CHECK_TIMEOUT)
            except Exception:
                health = "unhealthy"
        return {
            "name": self.name,
            "kind": self.kind,
            "state": "running" if running else "stopped",
            "health": health,
            "counters": self.counters(),
            "actions": sorted(self.actions),
        }


def _always() -> bool:
    return True


class Services:
    def __init__(self, services: list[Service]) -> None:
        self.services = {service.name: service for service in services}

    def get(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            raise NotFound("No such service", services=sorted(self.services))
        return service

    async def act(self, name: str, action: Action) -> dict[str, Any]:
        service = self.get(name)
        run = service.actions.get(action)
        if run is None:
            raise Conflict(f"The service {name} cannot {action}", actions=sorted(service.actions))
        await run()
        return await service.describe()

    async def describe(self) -> list[dict[str, Any]]:
        return [await service.describe() for service in self.services.values()]


def _writer(name: str, writer: BatchWriter[Any]) -> Service:
    async def restart() -> None:
        if writer.running:
            await writer.stop()
        writer.start()

    return Service(
        name=name,
        kind="writer",
        state=lambda: writer.running,
        counters=lambda: {
            "written": writer.written,
            "refused": writer.refused,
            "pending": writer.pending,
        },
        actions={"restart": restart, "stop": writer.stop},
    )


def _loop(loops: Loops, name: str) -> Service:
    loop = loops.loops[name]

    async def stop() -> None:
        await loops.halt(name)

    async def restart() -> None:
        await loops.restart(name)

    return Service(
        name=name,
        kind="loop",
        state=lambda: loops.running(name),
        counters=lambda: {"runs": loop.runs, "failures": loop.failures, "every": loop.every},
        actions={"restart": restart, "stop": stop},
    )


def _supervisor(supervisor: Supervisor) -> Service:
    async def restart() -> None:
        specs = list(supervisor.specs)
        await supervisor.stop()
        await supervisor.start(specs)

    return Service(
        name="hosted-agents",
        kind="supervisor",
        state=lambda: supervisor.running or not supervisor.specs,
        counters=lambda: {
            "agents": len(supervisor.hosted),
            "starts": sum(h.starts for h in supervisor.hosted.values()),
            "running": sum(
                1
                for h in supervisor.hosted.values()
                if h.process is not None and h.process.returncode is None
            ),
        },
        actions={"restart": restart, "stop": supervisor.stop},
    )


@dataclass(frozen=True, slots=True)
class Node:
    """What the services of this node are made of."""

    settings: Settings
    db: Database
    broker: Broker
    outbox: Outbox
    clients: Clients
    live: LiveAgents
    files: Files
    writers: list[NamedWriter]
    loops: Loops
    supervisor: Supervisor


def build_services(node: Node) -> Services:
    """Every component of this node, by name."""

    async def reconnect() -> None:
        await node.db.reconnect()

    async def storage_check() -> None:
        await asyncio.to_thread(node.files.storage.check)

    core = [
        Service(
            "database",
            "database",
            _always,
            lambda: {"errors": COUNTS.database_errors, "dialect": node.db.dialect},
            check=node.db.ping,
            actions={"restart": reconnect},
        ),
        Service(
            "broker",
            "broker",
            _always,
            lambda: {
                "errors": COUNTS.broker_errors,
                "published": COUNTS.events_published,
                "mode": "redis" if node.settings.redis_url else "embedded",
            },
            check=node.broker.ping,
        ),
        Service(
            "storage",
            "storage",
            _always,
            lambda: {"receivedBytes": node.files.received_bytes},
            check=storage_check,
        ),
        Service("mail", "mail", _always, lambda: {"sending": node.outbox.sending}),
        Service(
            "websockets",
            "websockets",
            _always,
            lambda: {
                "clients": len(node.clients),
                "agents": len(node.live),
                "delivered": COUNTS.events_delivered,
                "dropped": COUNTS.events_dropped,
            },
        ),
    ]
    writers = [_writer(named.name, named.writer) for named in node.writers]
    loops = [_loop(node.loops, name) for name in node.loops.loops]
    return Services([*core, *writers, *loops, _supervisor(node.supervisor)])
