"""``/api/services``: the hub's components on this node, and restarting or stopping one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request

from kai.auth.deps import Require
from kai.auth.service import Principal
from kai.core import NodeIdDep, SettingsDep
from kai.kit.openapi import errors
from kai.kit.schemas import Wire
from kai.ops.services import Services
from kai.realtime.deps import HandlersDep

router = APIRouter(prefix="/api/services", tags=["ops"])

Reader = Annotated[Principal, Require("services:read")]
Restarter = Annotated[Principal, Require("services:restart")]
Stopper = Annotated[Principal, Require("services:stop")]


class ServiceOut(Wire):
    name: str
    kind: str
    state: Literal["running", "stopped"]
    health: Literal["healthy", "unhealthy", "stopped"]
    counters: dict[str, Any]
    actions: list[str]


class ServicesOut(Wire):
    node: str
    services: list[ServiceOut]
    api_endpoint: str
    web_socket_endpoint: str
    registered_routes: list[str]
    active_web_socket_handlers: list[str]


class ServiceActed(Wire):
    success: bool = True
    node: str
    service: ServiceOut


def _routes(routes: Iterable[Any]) -> Iterator[str]:
    """``METHOD path`` of every route, through included routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _routes(included.routes)
            continue
        path = getattr(route, "path", None)
        if path is None:
            continue
        for method in getattr(route, "methods", None) or {"WEBSOCKET"}:
            if method != "HEAD":
                yield f"{method} {path}"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("", responses=errors(401, 403))
async def list_services(
    principal: Reader,
    node_id: NodeIdDep,
    settings: SettingsDep,
    handlers: HandlersDep,
    request: Request,
) -> ServicesOut:
    """This node's components with their state, health, counters and the actions they allow,
    and what the hub serves: its endpoints, routes and client WebSocket message handlers."""
    base = settings.base_url
    routes = sorted(set(_routes(request.app.routes)))
    return ServicesOut.model_validate(
        {
            "node": node_id,
            "services": await _services(request).describe(),
            "api_endpoint": f"{base}/api",
            "web_socket_endpoint": base.replace("http", "ws", 1) + "/ws/agents/{agentId}",
            "registered_routes": routes,
            "active_web_socket_handlers": handlers.types,
        }
    )


@router.post("/{name}/restart", responses=errors(401, 403, 404, 409))
async def restart_service(
    name: str, principal: Restarter, node_id: NodeIdDep, request: Request
) -> ServiceActed:
    """Restart one component on this node (409 if it cannot be restarted)."""
    described = await _services(request).act(name, "restart")
    return ServiceActed.model_validate({"node": node_id, "service": described})


@router.post("/{name}/stop", responses=errors(401, 403, 404, 409))
async def stop_service(
    name: str, principal: Stopper, node_id: NodeIdDep, request: Request
) -> ServiceActed:
    """Stop one component on this node until it is restarted (409 if it cannot be stopped)."""
    described = await _services(request).act(name, "stop")
    return ServiceActed.model_validate({"node": node_id, "service": described})
