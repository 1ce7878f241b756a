"""Health and readiness, answered without authentication."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter

from kai import __version__
from kai.auth.deps import HubDep
from kai.errors import ServiceUnavailable
from kai.openapi import errors
from kai.schemas import Wire

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
async def ready(hub: HubDep) -> Readiness:
    """Whether the hub's dependencies answer: the database, the file storage, and the broker
    when configured."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(hub.db.ping(), CHECK_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        checks["database"] = "unavailable"
    if hub.settings.redis_url:
        try:
            await asyncio.wait_for(hub.broker.ping(), CHECK_TIMEOUT)
            checks["broker"] = "ok"
        except Exception as exc:
            log.warning("readiness: broker check failed: %s", type(exc).__name__)
            checks["broker"] = "unavailable"
    try:
        await asyncio.wait_for(asyncio.to_thread(hub.files.storage.check), CHECK_TIMEOUT)
        checks["storage"] = "ok"
    except Exception as exc:
        log.warning("readiness: storage check failed: %s", type(exc).__name__)
        checks["storage"] = "unavailable"
    if any(state != "ok" for state in checks.values()):
        raise ServiceUnavailable("Not ready", checks=checks)
    return Readiness(checks=checks)
