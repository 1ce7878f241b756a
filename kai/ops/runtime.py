"""Runtime configuration: the settings that may change while the hub runs.

An operator's change is validated against the setting's own type and bounds, stored in the
``runtime_settings`` table, audited, and applied to the live ``Settings`` object, which every
component reads when it uses a value. Every node applies it: the node that took the change
broadcasts it and each node reloads the stored overrides. A node that starts applies them too.
``null`` takes a runtime value back, to what the environment (or the default) says.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from kai.config import Settings
from kai.db import Base, Database, UTCDateTime, utcnow
from kai.errors import Unprocessable
from kai.protocol.control import ConfigChanged

log = logging.getLogger("kai.ops.runtime")

# Read by their components each time they are used, so a change takes effect at once.
RUNTIME_KEYS: tuple[str, ...] = (
    "log_level",
    "auth_rate_limit",
    "auth_rate_window",
    "command_timeout",
    "command_max_timeout",
    "task_lease_seconds",
    "task_max_attempts",
    "stream_ttl",
    "upload_max_bytes",
    "upload_quota_bytes",
    "agent_max_message_bytes",
    "ws_allowed_origins",
    "ws_max_message_bytes",
    "ws_rate_limit",
    "ws_rate_window",
    "ws_send_queue",
)
# Those that tune work may change with ``config:update``; the rest guard accounts or the hub
# (throttles, allowed origins, log level, quotas, message and queue sizes) and need
# ``system:admin`` too. A key added above is guarded until it is listed here.
WORK_KEYS: frozenset[str] = frozenset(
    {
        "command_timeout",
        "command_max_timeout",
        "task_lease_seconds",
        "task_max_attempts",
        "stream_ttl",
    }
)
GUARD_PERMISSION = "system:admin"


class RuntimeSetting(Base):
    """A setting changed at run time, and by whom."""

    __tablename__ = "runtime_settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _changes_model() -> type[BaseModel]:
    """A model of a partial change: each key optional, with the setting's type and bounds."""
    fields: dict[str, Any] = {}
    for key in RUNTIME_KEYS:
        info = Settings.model_fields[key]
        copy = FieldInfo.merge_field_infos(info, default=None, default_factory=None)
        annotation: Any = info.annotation
        fields[key] = (annotation | None, copy)
    return create_model(
        "RuntimeChanges",
        __config__=ConfigDict(
            alias_generator=to_camel, populate_by_name=False, extra="forbid", allow_inf_nan=False
        ),
        **fields,
    )


CHANGES = _changes_model()


def wire_name(key: str) -> str:
    return to_camel(key)


class RuntimeConfig:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        # What the environment (or the default) says, to go back to when a change is undone.
        self.base = {key: getattr(settings, key) for key in RUNTIME_KEYS}
        self.from_env = {key for key in RUNTIME_KEYS if key in settings.model_fields_set}
        self.overrides: dict[str, RuntimeSetting] = {}

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The change in snake_case, each value checked; 422 with the field errors if not."""
        try:
            checked = CHANGES.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "settings", "message": e["msg"]}
                for e in exc.errors()
            ]
            raise Unprocessable("Invalid settings", errors=errors) from None
        changes = {key: getattr(checked, key) for key in checked.model_fields_set}
        merged = {**self.current(), **{k: v for k, v in changes.items() if v is not None}}
        if merged["command_timeout"] > merged["command_max_timeout"]:
            raise Unprocessable(
                "Invalid settings",
                errors=[
                    {"field": "commandTimeout", "message": "must not exceed commandMaxTimeout"}
                ],
            )
        return changes

    @staticmethod
    def wire(key: str) -> str:
        return wire_name(key)

    @staticmethod
    def permission(key: str) -> str:
        """The permission a change of ``key`` needs: ``config:update``, or ``system:admin``."""
        return "config:update" if key in WORK_KEYS else GUARD_PERMISSION

    def permissions(self, raw: dict[str, Any]) -> list[str]:
        """The permissions a change (by wire name) needs, checked before its values are."""
        return sorted({self.permission(k) for k in RUNTIME_KEYS if wire_name(k) in raw})

    async def on_config_changed(self, _: ConfigChanged) -> None:
        await self.reload()

    def current(self) -> dict[str, Any]:
        return {key: getattr(self.settings, key) for key in RUNTIME_KEYS}

    async def change(self, changes: dict[str, Any], *, user_id: str) -> None:
        """Store the change (``None`` removes an override), then apply it here."""
        now = utcnow()
        async with self.db.session() as session:
            for key, value in changes.items():
                await session.execute(delete(RuntimeSetting).where(RuntimeSetting.key == key))
                if value is not None:
                    session.add(
                        RuntimeSetting(
                            key=key,
                            value=_jsonable(value),
                            updated_by=user_id,
                            updated_at=now,
                        )
                    )
        await self.reload()

    async def reload(self) -> None:
        """Read the stored overrides and apply them (and undo the ones that are gone)."""
        async with self.db.session(write=False) as session:
            rows = list(await session.scalars(select(RuntimeSetting)))
        self.overrides = {row.key: row for row in rows if row.key in RUNTIME_KEYS}
        values = dict(self.base)
        for key, row in self.overrides.items():
            try:
                values[key] = CHANGES.model_validate({wire_name(key): row.value}).__dict__[key]
            except ValidationError:
                log.warning("stored runtime setting %s is no longer valid; ignored", key)
        for key, value in values.items():
            setattr(self.settings, key, value)
        logging.getLogger().setLevel(str(values["log_level"]).upper())

    def source(self, key: str) -> str:
        if key in self.overrides:
            return "runtime"
        return "environment" if key in self.from_env else "default"

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each runtime setting: its value, where it comes from, and what it means."""
        out: dict[str, dict[str, Any]] = {}
        for key in RUNTIME_KEYS:
            row = self.overrides.get(key)
            out[wire_name(key)] = {
                "value": _jsonable(getattr(self.settings, key)),
                "source": self.source(key),
                "environmentVariable": f"KAI_{key.upper()}",
                "description": Settings.model_fields[key].description,
                "permission": self.permission(key),
                "updatedBy": row.updated_by if row else None,
                "updatedAt": row.updated_at if row else None,
            }
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value
