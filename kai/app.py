"""The application: ``create_app(settings)`` wires the hub and mounts every router."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from kai import __version__
from kai.agents import routes as agent_routes
from kai.agents import socket as agent_socket
from kai.agents.hosted import Supervisor
from kai.agents.live import LiveAgents
from kai.agents.protocol import Close
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.auth import admin_routes
from kai.auth import routes as auth_routes
from kai.auth.audit import AuditLog
from kai.auth.bootstrap import ensure_first_admin
from kai.auth.mail import Outbox, mailer_for
from kai.auth.passwords import Passwords
from kai.auth.service import Identity
from kai.auth.tokens import Signer
from kai.config import HostedAgent, Settings
from kai.console import routes as console_routes
from kai.db import Database, migrate, new_id
from kai.errors import KaiError, problem
from kai.hub import Hub
from kai.kit.counters import COUNTS
from kai.kit.loops import Loops
from kai.kit.openapi import problem_schema
from kai.kit.ratelimit import Limiter, MemoryLimiter, RedisLimiter
from kai.middleware import RequestGuard, StreamedRoute, streamed_routes
from kai.ops import apidocs_routes, config_routes, service_routes
from kai.ops import routes as ops_routes
from kai.ops.metrics import HttpMetrics, Metrics
from kai.ops.runtime import RuntimeConfig
from kai.ops.services import build_services
from kai.realtime import routes as realtime_routes
from kai.realtime.broker import Broker, MemoryBroker, Window
from kai.realtime.clients import Clients
from kai.realtime.handlers import default_handlers
from kai.realtime.redis_broker import RedisBroker
from kai.teams import routes as team_routes
from kai.teams import socket as team_socket
from kai.teams.peers import Peers
from kai.teams.service import Teams
from kai.work import file_routes, stream_routes
from kai.work import routes as work_routes
from kai.work.commands import Commands
from kai.work.files import UPLOAD_OVERHEAD, Files
from kai.work.socket import command_execute
from kai.work.streams import Streams
from kai.work.tasks import Tasks

log = logging.getLogger("kai")


class ProblemResponse(Response):
    media_type = "application/problem+json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _problem_response(
    request: Request, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    """The problem as the answer, with the request's id (also in ``X-Request-ID`` and in every
    log line written while serving it)."""
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body = {**body, "requestId": request_id}
    return ProblemResponse(body, status_code=body["status"], headers=headers)


async def build_hub(settings: Settings, *, run_migrations: bool = True) -> Hub:
    """Open the database (migrating it) and build every app-wide resource."""
    url = settings.resolved_database_url
    if run_migrations:
        await asyncio.to_thread(migrate, url)
    db = Database(url)
    audit = AuditLog(
        db,
        interval=settings.audit_flush_interval,
        batch_size=settings.audit_batch_size,
        flood_window=settings.audit_flood_window,
    )
    outbox = Outbox(
        mailer_for(settings.smtp_url, sender=settings.mail_from, spool=settings.data_dir / "mail")
    )
    node_id = new_id()
    window = Window(count=settings.event_window_count, age=settings.event_window_age)
    broker: Broker
    limiter: Limiter
    if settings.redis_url:
        redis_broker = RedisBroker(
            settings.redis_url, node_id=node_id, window=window, prefix=settings.redis_prefix
        )
        broker = redis_broker
        limiter = RedisLimiter(redis_broker.redis, prefix=f"{settings.redis_prefix}bucket:")
    else:
        broker, limiter = MemoryBroker(node_id=node_id, window=window), MemoryLimiter()
    identity = Identity(
        settings,
        db=db,
        passwords=Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.password_hash_concurrency,
        ),
        signer=Signer(settings.signing_key()),
        audit=audit,
        outbox=outbox,
        limiter=limiter,
    )
    live = LiveAgents()
    relay = Relay(live, broker)
    registry = Registry(settings, db=db, live=live, relay=relay, broker=broker)
    clients = Clients()
    identity.kicks = lambda message: relay.spawn(broker.broadcast({"op": "kick", **message}))
    identity.close_agents_of = lambda user_id: relay.close_owned_soon(
        user_id, Close.OWNER_DISABLED, "Owner disabled"
    )
    commands = Commands(
        db,
        registry=registry,
        relay=relay,
        broker=broker,
        live=live,
        record_interval=settings.log_flush_interval,
    )
    tasks = Tasks(settings, db, registry=registry, relay=relay, broker=broker, live=live)
    streams = Streams(settings, db, registry=registry, relay=relay, broker=broker)
    teams = Teams(audit)
    return Hub(
        settings=settings,
        db=db,
        audit=audit,
        outbox=outbox,
        limiter=limiter,
        identity=identity,
        live=live,
        agents=registry,
        broker=broker,
        relay=relay,
        clients=clients,
        ws_handlers=default_handlers(),
        ws_limiter=limiter,
        commands=commands,
        tasks=tasks,
        streams=streams,
        files=Files(settings, db, registry=registry, relay=relay),
        runtime=RuntimeConfig(settings, db),
        teams=teams,
        peers=Peers(
            settings,
            db,
            teams=teams,
            registry=registry,
            commands=commands,
            tasks=tasks,
            streams=streams,
            broker=broker,
            relay=relay,
            live=live,
        ),
        node_id=node_id,
    )


async def start_hub(hub: Hub) -> None:
    """Start what runs in the background: the broker and the audit writer."""
    hub.broker.on_message(hub.clients.on_broker_message)
    hub.broker.on_message(hub.relay.on_broker_message)
    hub.broker.on_message(hub.commands.on_broker_message)
    hub.broker.on_message(hub.tasks.on_broker_message)
    hub.broker.on_message(hub.streams.on_broker_message)
    hub.broker.on_message(hub.runtime.on_broker_message)
    hub.broker.on_message(hub.peers.on_broker_message)
    await hub.runtime.reload()
    hub.ws_handlers.register("command_execute", command_execute(hub))
    await hub.broker.start()
    hub.audit.start()
    hub.agents.log_writer.start()
    hub.streams.writer.start()
    hub.commands.records.start()


def hosted_agents(settings: Settings) -> list[HostedAgent]:
    specs = list(settings.hosted_agents)
    if settings.demo and not any(spec.name == "demo" for spec in specs):
        specs.append(HostedAgent(name="demo", target="kai.demo:agent"))
    return specs


def local_ws_url(settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"ws://{host}:{settings.port}/ws/agent"


def start_loops(hub: Hub) -> Loops:
    loops = Loops()
    settings = hub.settings
    loops.start(
        "presence-reaper", every=settings.agent_heartbeat_interval, work=hub.agents.expire_presence
    )
    loops.start(
        "task-dispatch", every=settings.task_dispatch_interval, work=hub.tasks.dispatch_waiting
    )
    loops.start(
        "lease-reaper", every=min(5.0, settings.task_lease_seconds / 3), work=hub.tasks.reap
    )
    loops.start("stream-expiry", every=min(600.0, settings.stream_ttl / 4), work=hub.streams.prune)
    retention = timedelta(days=settings.log_retention_days)
    loops.start(
        "log-retention",
        every=min(3600.0, retention.total_seconds() / 4),
        work=lambda: hub.agents.prune_logs(older_than=retention),
    )
    audit_retention = timedelta(days=settings.audit_retention_days)
    loops.start(
        "audit-retention",
        every=min(3600.0, audit_retention.total_seconds() / 4),
        work=lambda: hub.audit.prune(older_than=audit_retention),
    )
    loops.start("audit-floods", every=settings.audit_flood_window / 4, work=hub.audit.sweep)
    return loops


async def close_hub(hub: Hub) -> None:
    hub.clients.close_all()
    for live in hub.live.all():
        await live.close(Close.GOING_AWAY, "Hub shutting down")
    await hub.relay.drain()
    await hub.broker.close()
    await hub.agents.log_writer.close()
    await hub.streams.writer.close()
    await hub.commands.records.close()
    await hub.audit.close()
    await hub.outbox.drain()
    await hub.db.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The kai hub as an ASGI application."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        hub = await build_hub(settings)
        await start_hub(hub)
        app.state.hub = hub  # for tools and tests; requests use the lifespan state
        loops = start_loops(hub)
        supervisor = Supervisor(hub.db, hub.agents, hub_url=local_ws_url(settings))
        try:
            await ensure_first_admin(hub)
            await supervisor.start(hosted_agents(settings))
            app.state.supervisor = supervisor
            app.state.services = build_services(hub, loops, supervisor)
            yield {"hub": hub}
        finally:
            await supervisor.stop()
            await loops.stop()
            await close_hub(hub)

    app = FastAPI(
        title="kai",
        version=__version__,
        summary="A self-hosted hub for AI agents.",
        description="REST and WebSocket API of the kai hub. Errors are `application/problem+json`.",
        lifespan=lifespan,
        docs_url=None,  # kai.ops.apidocs_routes serves /docs from installed files
        redoc_url=None,
    )
    app.state.metrics = Metrics()
    app.add_middleware(HttpMetrics, metrics=app.state.metrics)
    streamed: list[StreamedRoute] = []  # filled below, once every router is in
    app.add_middleware(
        RequestGuard,
        max_body=settings.max_body_bytes,
        streamed_routes=streamed,
        streamed_max_body=lambda: settings.upload_max_bytes + UPLOAD_OVERHEAD,
    )
    _install_error_handlers(app)
    _document_problems(app)

    app.include_router(ops_routes.router)
    app.include_router(apidocs_routes.router)
    app.include_router(auth_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(agent_routes.router)
    app.include_router(agent_socket.router)
    app.include_router(realtime_routes.router)
    app.include_router(work_routes.router)
    app.include_router(work_routes.tasks_router)
    app.include_router(stream_routes.router)
    app.include_router(file_routes.router)
    app.include_router(config_routes.router)
    app.include_router(service_routes.router)
    app.include_router(team_routes.router)
    app.include_router(team_socket.router)
    app.include_router(console_routes.router)
    app.mount("/console", console_routes.console_files(), name="console")
    streamed.extend(streamed_routes(app.routes))
    return app


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KaiError)
    async def kai_error(request: Request, exc: KaiError) -> Response:
        return _problem_response(request, exc.problem(), exc.headers)

    @app.exception_handler(RedisError)
    async def broker_down(request: Request, exc: RedisError) -> Response:
        COUNTS.broker_errors += 1
        log.warning("broker unavailable: %s", type(exc).__name__)
        return _problem_response(
            request,
            problem(503, "The broker is unavailable; try again shortly"),
            {"Retry-After": "2"},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _problem_response(request, problem(400, "Request body is not valid JSON"))
        fields = [
            {"field": _field_name(tuple(p["loc"])), "message": str(p["msg"])} for p in problems
        ]
        return _problem_response(request, problem(422, "Invalid request", errors=fields))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such route"
        elif exc.status_code == 405:
            detail = "Method not allowed on this route"
        return _problem_response(request, problem(exc.status_code, detail), dict(exc.headers or {}))


def _document_problems(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_schema(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
