"""Health, readiness and metrics, answered without authentication."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from kai import __version__
from kai.agents.deps import LiveDep
from kai.agents.models import Agent
from kai.core import DatabaseDep, SettingsDep
from kai.errors import ServiceUnavailable
from kai.kit.counters import COUNTS
from kai.kit.openapi import errors
from kai.kit.schemas import Wire
from kai.ops.metrics import Metrics
from kai.realtime.deps import BrokerDep, ClientsDep
from kai.work.deps import FilesDep
from kai.work.models import Task

router = APIRouter(tags=["ops"])
log = logging.getLogger("kai.ops")

CHECK_TIMEOUT = 2.0


class Health(Wire):
    status: Literal["ok"] = "ok"
    version: str = __version__


class Readiness(Wire):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


@router.get("/health")
async def health() -> Health:
    """The process is up and answering."""
    return Health()


@router.get("/ready", responses=errors(503))
async def ready(
    broker: BrokerDep, db: DatabaseDep, files: FilesDep, settings: SettingsDep
) -> Readiness:
    """Whether the hub's dependencies answer: the database, the file storage, and the broker
    when configured."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(db.ping(), CHECK_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    if settings.redis_url:
        try:
            await asyncio.wait_for(broker.ping(), CHECK_TIMEOUT)
            checks["broker"] = "ok"
        except Exception as exc:
            log.warning("readiness: broker check failed: %s", type(exc).__name__)
            checks["broker"] = "unavailable"
    try:
        await asyncio.wait_for(asyncio.to_thread(files.storage.check), CHECK_TIMEOUT)
        checks["storage"] = "ok"
    except Exception as exc:
        log.warning("readiness: storage check failed: %s", type(exc).__name__)
        checks["storage"] = "unavailable"
    if any(state != "ok" for state in checks.values()):
        raise ServiceUnavailable("Not ready", checks=checks)
    return Readiness(checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition: HTTP requests by route, status and"
            " latency; WebSocket connections; events published, delivered and dropped;"
            " commands and tasks by outcome; agents and tasks by status; database and broker"
            " errors",
            "content": {"text/plain": {"example": 'kai_commands_total{outcome="succeeded"} 3.0\n'}},
        }
    },
)
async def metrics(
    request: Request, clients: ClientsDep, db: DatabaseDep, live: LiveDep
) -> Response:
    """The hub's metrics in Prometheus format, without authentication (like ``/health``):
    restrict it at the proxy if the counts are not for everyone."""
    registry: Metrics = request.app.state.metrics
    snapshot = registry.collector.snapshot
    snapshot.client_connections = len(clients)
    snapshot.agent_connections = len(live)
    try:
        async with db.session(write=False) as session:
            agents = await session.execute(
                select(Agent.status, func.count()).group_by(Agent.status)
            )
            tasks = await session.execute(select(Task.status, func.count()).group_by(Task.status))
            snapshot.agents_by_status = {str(k): int(v) for k, v in agents.all()}
            snapshot.tasks_by_status = {str(k): int(v) for k, v in tasks.all()}
    except Exception as exc:  # the counters are still worth serving
        COUNTS.database_errors += 1
        log.warning("metrics: database gauges not read: %s", type(exc).__name__)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
