"""``/api/config``: read and change the settings that may change while the hub runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from kai.auth.deps import AuditDep, ClientDep, Require, authorize
from kai.auth.service import Principal
from kai.db import utcnow
from kai.kit.openapi import errors
from kai.kit.schemas import Body, Wire
from kai.ops.deps import RuntimeDep
from kai.protocol.bounds import TypedJson
from kai.protocol.control import ConfigChanged
from kai.realtime.deps import BrokerDep

router = APIRouter(prefix="/api/config", tags=["ops"])

Reader = Annotated[Principal, Require("config:read")]
Updater = Annotated[Principal, Require("config:update")]


class SettingOut(Wire):
    value: Any
    source: Literal["default", "environment", "runtime"]
    environment_variable: str
    description: str | None
    permission: Literal["config:update", "system:admin"] = Field(
        description="What a change of this setting needs: those that guard accounts or the hub "
        "need system:admin"
    )
    updated_by: str | None
    updated_at: datetime | None


class ConfigOut(Wire):
    settings: dict[str, SettingOut]
    timestamp: datetime


class ConfigUpdate(Body):
    settings: TypedJson = Field(
        description="The settings to change, by name; null takes a runtime change back",
        examples=[{"commandTimeout": 10, "wsRateLimit": 120}],
    )


class ConfigUpdated(ConfigOut):
    success: bool = True
    updated_fields: list[str]


@router.get("", responses=errors(401, 403))
async def read_config(principal: Reader, runtime: RuntimeDep) -> ConfigOut:
    """The settings that can change at run time: each value, where it comes from (default,
    environment, or changed at run time, by whom and when) and what it means. Secrets are
    never among them."""
    return ConfigOut.model_validate({"settings": runtime.describe(), "timestamp": utcnow()})


@router.put("", responses=errors(401, 403, 422))
async def update_config(
    request: Request,
    body: ConfigUpdate,
    principal: Updater,
    audit: AuditDep,
    broker: BrokerDep,
    runtime: RuntimeDep,
    client: ClientDep,
) -> ConfigUpdated:
    """Change runtime settings: validated (422 with the field errors), stored, audited, and
    applied on every node without a restart. Settings that guard accounts or the hub (their
    ``permission`` says so) need ``system:admin`` as well (403, and nothing changes)."""
    for permission in runtime.permissions(body.settings):
        authorize(request, audit, principal, permission, client_ip=client.ip)
    changes = runtime.validate(body.settings)
    await runtime.change(changes, user_id=principal.user_id)
    names = sorted(runtime.wire(key) for key in changes)
    audit.auth(
        "config_changed",
        ok=True,
        user_id=principal.user_id,
        resource="config",
        detail=",".join(f"{runtime.wire(k)}={v}" for k, v in sorted(changes.items())),
    )
    await broker.broadcast(ConfigChanged().wire())
    return ConfigUpdated.model_validate(
        {"settings": runtime.describe(), "timestamp": utcnow(), "updated_fields": names}
    )
