"""The application: ``create_app(settings)`` wires the hub and mounts every router."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from kai import __version__, container
from kai.config import Settings
from kai.console import routes as console_routes
from kai.errors import KaiError, problem
from kai.kit.clock import Clock
from kai.kit.counters import COUNTS
from kai.kit.openapi import problem_schema
from kai.middleware import RequestGuard, StreamedRoute, streamed_routes
from kai.ops.metrics import HttpMetrics, Metrics
from kai.work.files import UPLOAD_OVERHEAD

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


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The kai hub as an ASGI application (``clock``: for tests that move time on)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        hub = await container.build(settings, clock=clock)
        app.state.hub = hub  # for tools and tests; requests and sockets use the lifespan state
        try:
            await container.start(hub)
            app.state.supervisor = hub.parts.agents.supervisor
            app.state.services = hub.services
            yield hub.state
        finally:
            await container.stop(hub)

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

    for router in container.routers():
        app.include_router(router)
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
