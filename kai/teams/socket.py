"""``/ws/teams/{teamId}``: a person watches a team's channel, live and resumable."""

from __future__ import annotations

from functools import partial
from typing import Protocol, cast

from fastapi import APIRouter, WebSocket

from kai.agents.watch import viewer_of
from kai.auth.sockets import Admission, admit
from kai.db import Database
from kai.errors import KaiError
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.connection import ClientConnection, CloseCode, WebSocketSink, Who
from kai.realtime.events import team_log
from kai.realtime.handlers import Handlers, already_authenticated, heartbeat, resume
from kai.realtime.serving import Serving, resume_point, serve
from kai.teams.peers import Peers
from kai.teams.service import Teams

router = APIRouter()


def channel_handlers() -> Handlers:
    """A watcher of a team channel reads; it may only ping and resume."""
    handlers = Handlers()
    handlers.register("heartbeat", heartbeat)
    handlers.register("auth", already_authenticated)
    handlers.register("resume", resume)
    return handlers


HANDLERS = channel_handlers()


class TeamSocketServices(Admission, Serving, Protocol):
    db: Database
    broker: Broker
    clients: Clients
    teams: Teams
    peers: Peers


@router.websocket("/ws/teams/{teamId}")
async def team_socket(websocket: WebSocket, teamId: str) -> None:
    """Watch a team's channel: a ``team_status`` snapshot, then every ``team_message`` in order,
    with the same ``seq``/``epoch`` resume rules as an agent's socket (docs/teams.md)."""
    hub = cast(TeamSocketServices, websocket.state)
    principal = await admit(hub, websocket, log=f"team:{teamId}", path=f"/ws/teams/{teamId}")
    if principal is None:
        return
    try:
        async with hub.db.session(write=False) as session:
            await hub.teams.visible(session, viewer_of(principal), teamId)
    except KaiError:
        await websocket.close(CloseCode.POLICY, "Access denied")
        return
    since, epoch = resume_point(websocket)
    conn = ClientConnection(
        WebSocketSink(websocket),
        who=Who(principal.user_id, principal.session_id, principal.role),
        agent_id=team_log(teamId),
        broker=hub.broker,
        status=partial(hub.peers.team_status, teamId),
        max_queue=hub.settings.ws_send_queue,
        snapshot_type="team_status",
    )
    del principal
    hub.clients.add(conn)
    try:
        await conn.start(since=since, epoch=epoch)
        await serve(hub, conn, websocket, HANDLERS)
    finally:
        hub.clients.discard(conn)
        await conn.stop()
