"""The work part: commands, durable tasks, prompt streams and file uploads."""

from __future__ import annotations

from dataclasses import dataclass

from kai.agents.part import Agents
from kai.auth.part import Auth
from kai.core import Core
from kai.kit.wiring import Wiring
from kai.protocol.control import CommandAnswer, StreamCancelled, TaskWake
from kai.realtime.part import Realtime
from kai.storage import LocalDisk
from kai.work import backup, file_routes, routes, stream_routes
from kai.work.agent_messages import AgentWork
from kai.work.commands import Commands
from kai.work.files import Files
from kai.work.socket import command_execute
from kai.work.streams import Streams
from kai.work.tasks import Tasks

ROUTERS = (routes.router, routes.tasks_router, stream_routes.router, file_routes.router)


@dataclass(slots=True)
class Work:
    commands: Commands
    tasks: Tasks
    streams: Streams
    files: Files


def register(core: Core, wiring: Wiring, realtime: Realtime, auth: Auth, agents: Agents) -> Work:
    settings, db, broker = core.settings, core.db, realtime.broker
    registry, relay, live = agents.registry, agents.relay, agents.live
    commands = Commands(
        db,
        registry=registry,
        relay=relay,
        broker=broker,
        live=live,
        record_interval=settings.log_flush_interval,
    )
    tasks = Tasks(
        settings,
        db,
        registry=registry,
        relay=relay,
        broker=broker,
        live=live,
        outbox=realtime.outbox,
        clock=core.clock,
    )
    streams = Streams(settings, db, registry=registry, relay=relay, broker=broker, clock=core.clock)
    files = Files(
        settings, db, registry=registry, relay=relay, storage=LocalDisk(settings.data_dir / "files")
    )
    wiring.provide(commands=commands, tasks=tasks, streams=streams, files=files)
    wiring.on_control(CommandAnswer, commands.on_command_answer)
    wiring.on_control(TaskWake, tasks.on_task_wake)
    wiring.on_control(StreamCancelled, streams.on_stream_cancelled)
    realtime.handlers.register(
        "command_execute", command_execute(auth.audit, relay, commands, settings)
    )
    AgentWork(commands, tasks, streams).register(agents.messages)
    backup.register(registry.backups, files.storage)
    wiring.writer("stream-chunk-writer", streams.writer)
    wiring.writer("command-record-writer", commands.records)
    wiring.loop("task-dispatch", every=settings.task_dispatch_interval, work=tasks.dispatch_waiting)
    wiring.loop("lease-reaper", every=min(5.0, settings.task_lease_seconds / 3), work=tasks.reap)
    wiring.loop("stream-expiry", every=min(600.0, settings.stream_ttl / 4), work=streams.prune)
    return Work(commands=commands, tasks=tasks, streams=streams, files=files)
