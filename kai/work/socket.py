"""``command_execute`` on the client WebSocket: acknowledged at once, answered later."""

from __future__ import annotations

import asyncio
from typing import Any

from kai.agents.relay import Relay
from kai.agents.service import Viewer
from kai.auth import rbac
from kai.auth.audit import AuditLog
from kai.auth.rbac import Role
from kai.config import Settings
from kai.db import new_id
from kai.errors import KaiError
from kai.realtime.connection import ClientConnection
from kai.realtime.handlers import BadMessage, Handler
from kai.work.commands import Commands


def command_execute(
    audit: AuditLog, relay: Relay, commands: Commands, settings: Settings
) -> Handler:
    """The handler of ``{"type": "command_execute", "data": {"command", "params"}}``."""

    async def handle(conn: ClientConnection, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, dict):
            raise BadMessage("command_execute needs data: {command, params}")
        command = data.get("command")
        params = data.get("params") if data.get("params") is not None else {}
        if not isinstance(command, str) or not 0 < len(command) <= 200:
            raise BadMessage("data.command must be a command name")
        if not isinstance(params, dict):
            raise BadMessage("data.params must be an object")
        granted = rbac.allowed(conn.who.role, "agents:command")
        audit.permission(
            "agents:command",
            granted=granted,
            user_id=conn.who.user_id,
            resource=f"WS /ws/agents/{conn.agent_id} command_execute",
        )
        if not granted:
            raise BadMessage("Insufficient permissions: agents:command")
        command_id = new_id()
        conn.send({"type": "command_acknowledged", "commandId": command_id})
        viewer = Viewer(conn.who.user_id, conn.who.role == Role.ADMIN)
        relay.spawn(_run(commands, settings, conn, viewer, command_id, command, params))

    return handle


async def _run(
    commands: Commands,
    settings: Settings,
    conn: ClientConnection,
    viewer: Viewer,
    command_id: str,
    command: str,
    params: dict[str, Any],
) -> None:
    try:
        outcome = await commands.execute(
            viewer,
            conn.agent_id,
            command=command,
            parameters=params,
            timeout=settings.command_timeout,
            via="ws",
            command_id=command_id,
            checked=True,  # the socket's access to the agent was checked when it opened
        )
    except KaiError as exc:
        conn.send({"type": "command_error", "commandId": command_id, "error": exc.detail})
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        conn.send(
            {"type": "command_error", "commandId": command_id, "error": "Command handling failed"}
        )
        raise
    if outcome.success:
        conn.send(
            {
                "type": "command_result",
                "commandId": command_id,
                "result": outcome.result,
                "success": True,
                "executionTime": round(outcome.execution_time, 6),
            }
        )
    else:
        conn.send(
            {
                "type": "command_error",
                "commandId": command_id,
                "error": outcome.error or "Command failed",
            }
        )
