"""``/ws/agents/{agentId}``: people and apps watch (and drive) one agent in real time."""

from __future__ import annotations

from typing import Protocol, cast

from fastapi import APIRouter, WebSocket

from kai.agents.service import Registry, Viewer
from kai.auth.rbac import Role
from kai.auth.service import Principal
from kai.auth.sockets import Admission, admit
from kai.errors import KaiError
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.connection import ClientConnection, CloseCode, WebSocketSink, Who
from kai.realtime.serving import Serving, resume_point, serve

router = APIRouter()


class WatchServices(Admission, Serving, Protocol):
    agents: Registry
    broker: Broker
    clients: Clients


def viewer_of(principal: Principal) -> Viewer:
    return Viewer(principal.user_id, principal.role == Role.ADMIN)


@router.websocket("/ws/agents/{agentId}")
async def client_socket(websocket: WebSocket, agentId: str) -> None:
    """Watch one agent: its status, logs and work, live and resumable (docs/websocket.md)."""
    hub = cast(WatchServices, websocket.state)
    settings = hub.settings
    principal = await admit(hub, websocket, log=f"agent:{agentId}", path=f"/ws/agents/{agentId}")
    if principal is None:
        return
    try:
        async with hub.db.session(write=False) as session:
            await hub.agents.visible(session, viewer_of(principal), agentId)
    except KaiError:
        await websocket.close(CloseCode.POLICY, "Access denied")
        return
    since, epoch = resume_point(websocket)
    who = Who(principal.user_id, principal.session_id, principal.role)
    del principal  # its ORM rows need not live as long as the connection
    conn = ClientConnection(
        WebSocketSink(websocket),
        who=who,
        agent_id=agentId,
        broker=hub.broker,
        status=lambda: hub.agents.status_event(agentId),
        max_queue=settings.ws_send_queue,
    )
    hub.clients.add(conn)
    try:
        await conn.start(since=since, epoch=epoch)
        await serve(hub, conn, websocket)
    finally:
        hub.clients.discard(conn)
        await conn.stop()
