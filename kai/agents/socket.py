"""``/ws/agent``: where agent processes connect, say hello, heartbeat, report and log."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta
from typing import Any, Protocol, cast

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState

from kai.agents import store
from kai.agents.live import LiveAgent, LiveAgents
from kai.agents.messages import AgentMessages
from kai.agents.models import Agent
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.auth.audit import AuditLog
from kai.auth.tokens import digest
from kai.config import Settings
from kai.db import Database, new_id
from kai.protocol.agent import (
    AGENT_MESSAGE,
    AGENT_MESSAGE_TYPES,
    COORDINATION_TYPES,
    LEVELS,
    PROTOCOL_VERSION,
    AnyAgentMessage,
    Close,
    Heartbeat,
    Hello,
    LogBatch,
    StatusReport,
)
from kai.realtime.broker import Broker
from kai.server import mark_authenticated

log = logging.getLogger("kai.agents.socket")
router = APIRouter()


class SocketChannel:
    """A Starlette WebSocket as the hub's channel to one agent."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(orjson.dumps(message).decode())

    async def send_text(self, text: str) -> None:
        async with self._lock:
            try:
                await self._ws.send_text(text)
            except WebSocketDisconnected:  # the hub closed it (a newer connection took over)
                raise WebSocketDisconnect(Close.REPLACED) from None

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._ws.close(code, reason)
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # the peer went first (a dropped TCP connection answers the close frame so)


class AgentSocketServices(Protocol):
    """What the agent socket uses, as the parts provided it to the connection's state."""

    settings: Settings
    db: Database
    node_id: str
    audit: AuditLog
    agents: Registry
    live: LiveAgents
    relay: Relay
    broker: Broker
    agent_messages: AgentMessages


def _bearer(websocket: WebSocket) -> str | None:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@router.websocket("/ws/agent")
async def agent_socket(websocket: WebSocket) -> None:
    """An agent process connects here with its token (see docs/agent-protocol.md)."""
    hub = cast(AgentSocketServices, websocket.state)
    token = _bearer(websocket)
    agent = None
    if token is not None:
        async with hub.db.session(write=False) as session:
            agent = await store.by_token_hash(session, digest(token))
    client_ip = websocket.client.host if websocket.client else None
    await websocket.accept()
    if agent is None:
        hub.audit.auth("agent_connect", ok=False, client_ip=client_ip, detail="bad token")
        await websocket.close(Close.AUTH_FAILED, "Authentication failed")
        return
    hub.audit.auth(
        "agent_connect",
        ok=True,
        user_id=agent.owner_id,
        resource=f"agent:{agent.id}",
        client_ip=client_ip,
    )
    mark_authenticated(websocket.scope)
    await AgentConnection(hub, websocket, agent).run()


class AgentConnection:
    """One agent's socket, from welcome to close."""

    def __init__(self, hub: AgentSocketServices, websocket: WebSocket, agent: Agent) -> None:
        self.hub = hub
        self.ws = websocket
        self.agent_id = agent.id
        self.first_connection = agent.last_activity is None
        self.live = LiveAgent(agent.id, new_id(), SocketChannel(websocket), owner_id=agent.owner_id)
        self.settings = hub.settings

    async def run(self) -> None:
        close_code: int | None = None
        # Everything after attach is inside the try: whatever fails, the registration is
        # undone, or the agent's next connection would find a dead one in its place.
        previous = self.hub.live.attach(self.live)
        try:
            if previous is not None:
                await previous.close(Close.REPLACED, "Replaced by a newer connection")
            async with self.hub.db.session() as session:
                await store.set_state(
                    session,
                    self.agent_id,
                    connection_id=self.live.connection_id,
                    node_id=self.hub.node_id,
                )
            await self.live.send(
                {
                    "type": "welcome",
                    "agentId": self.agent_id,
                    "connectionId": self.live.connection_id,
                    "protocolVersion": PROTOCOL_VERSION,
                    "heartbeatInterval": self.settings.agent_heartbeat_interval,
                    "heartbeatTimeout": self.settings.agent_heartbeat_timeout,
                    "maxMessageBytes": self.settings.agent_max_message_bytes,
                }
            )
            close_code = await self._receive_loop()
        except WebSocketDisconnect as exc:
            close_code = exc.code
        except Exception:
            log.exception("agent %s: connection failed", self.agent_id)
            await self.live.close(Close.SERVER_ERROR, "Internal error")
        finally:
            await self._cleanup(close_code)

    async def _cleanup(self, close_code: int | None) -> None:
        """Undo this connection's registration; no step's failure skips the next."""
        ours = self.hub.live.detach(self.live)
        if ours:
            self.hub.relay.forget_agent(self.agent_id)
        for hook in self.hub.agent_messages.left:
            try:
                await hook(self.live, ours)
            except Exception:
                log.exception("agent %s: %s failed on leaving", self.agent_id, hook.__name__)
        await self._went_away(close_code)

    async def _receive_loop(self) -> int | None:
        timeout = self.settings.agent_heartbeat_timeout
        loop = asyncio.get_running_loop()
        try:
            # One deadline for the connection, moved on by every message (cheaper than a
            # timeout per receive) and paused while a message is handled.
            async with asyncio.timeout(timeout) as deadline:
                while True:
                    message = await self.ws.receive()
                    deadline.reschedule(None)
                    if message["type"] == "websocket.disconnect":
                        return int(message.get("code", 1000))
                    self.live.messages_in += 1
                    self.live.last_activity = self.hub.agents.clock.now()
                    raw = message.get("text")
                    if raw is None:  # the protocol speaks JSON in text frames only
                        await self._error(
                            "Invalid message format", details="Send JSON in text frames"
                        )
                    else:
                        await self._handle(raw)
                    deadline.reschedule(loop.time() + timeout)
        except TimeoutError:
            code = Close.HEARTBEAT_TIMEOUT if self.live.ready else Close.PROTOCOL_ERROR
            reason = "Heartbeat timeout" if self.live.ready else "No hello received"
            await self.live.close(code, reason)
            return code

    async def _error(self, error: str, **details: Any) -> None:
        await self.live.send({"type": "error", "error": error, **details})

    async def _handle(self, raw: str) -> None:
        size = len(raw) if raw.isascii() else len(raw.encode())  # the limit is in bytes
        if size > self.settings.agent_max_message_bytes:
            await self._error("Message too large", limit=self.settings.agent_max_message_bytes)
            return
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self._error("Invalid message format")
            return
        kind = data.get("type") if isinstance(data, dict) else None
        try:
            message = AGENT_MESSAGE.validate_python(data)
        except ValidationError as exc:
            if isinstance(kind, str) and kind not in AGENT_MESSAGE_TYPES:
                await self._error(f"Unknown message type: {kind[:60]}")
            else:
                problems = [
                    {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors()[:20]
                ]
                asked = isinstance(kind, str) and kind in COORDINATION_TYPES
                request_id = data.get("requestId") if asked else None
                if isinstance(request_id, str) and request_id:
                    # A request the agent waits on is answered, refused, by its id.
                    await self.live.send(
                        {
                            "type": "peer_reply",
                            "requestId": request_id[:64],
                            "ok": False,
                            "status": 422,
                            "error": "Invalid message",
                            "details": problems,
                        }
                    )
                else:
                    await self._error("Invalid message", details=problems)
            return
        if not self.live.ready and not isinstance(message, Hello):
            await self._error("Send hello first")
            return
        try:
            await self._dispatch(message)
        except WebSocketDisconnect:
            raise  # the agent left while being answered: no failure of the handler
        except Exception:
            log.exception("agent %s: handling %s failed", self.agent_id, message.type)
            await self._error("Message handling failed", details="internal error")

    async def _dispatch(self, message: AnyAgentMessage) -> None:
        if isinstance(message, Hello):
            await self._hello(message)
        elif isinstance(message, Heartbeat):
            await self._heartbeat(message)
        elif isinstance(message, StatusReport):
            await self._status(message)
        elif isinstance(message, LogBatch):
            await self._logs(message)
        else:  # work, and working with peers: the parts above registered their handlers
            handler = self.hub.agent_messages.handler(message)
            if handler is None:
                await self._error(f"Unknown message type: {message.type}")
            else:
                await handler(self.live, message)

    def _presence(self) -> dict[str, Any]:
        now = self.hub.agents.clock.now()
        return {
            "last_activity": now,
            "presence_expires_at": now + timedelta(seconds=self.settings.agent_heartbeat_timeout),
        }

    async def _hello(self, hello: Hello) -> None:
        if self.live.ready:
            await self._error("Hello was already received on this connection")
            return
        now = self.hub.agents.clock.now()
        capabilities = hello.model_dump(by_alias=True, exclude={"type"})
        async with self.hub.db.session() as session:
            agent = await store.get(session, self.agent_id)
            if agent is None:
                return
            reconnects = agent.reconnects + (0 if self.first_connection else 1)
            updated = await store.set_state_if_connection(
                session,
                self.agent_id,
                self.live.connection_id,
                status="online",
                health="healthy",
                capabilities=capabilities,
                connected_at=now,
                status_changed_at=now,
                status_message=None,
                reconnects=reconnects,
                **self._presence(),
            )
        if not updated:
            return  # a newer connection took over meanwhile
        self.first_connection = False
        self.live.max_concurrency = hello.max_concurrency
        self.live.task_types = frozenset(hello.task_types)
        self.live.commands = frozenset(hello.commands)
        # Ready before anyone hears it is online: work sent on that news must find it.
        self.hub.live.mark_ready(self.live)
        await self.live.send({"type": "hello_ack", "status": "online", "timestamp": now})
        await self._present()
        await self.hub.relay.status(self.agent_id, status="online", health="healthy", at=now)
        for hook in self.hub.agent_messages.ready:
            await hook(self.live)
        log.info("agent %s online (%s %s)", self.agent_id, hello.name, hello.version)

    async def _present(self) -> None:
        """Tell the broker this node holds the agent. While the broker is down the agent is
        still served here (its leases, its acks); routing from other nodes waits for it."""
        try:
            await self.hub.broker.set_presence(
                self.agent_id, ttl=self.settings.agent_heartbeat_timeout
            )
        except Exception as exc:
            log.warning("agent %s: presence not recorded (%s)", self.agent_id, type(exc).__name__)

    async def _heartbeat(self, beat: Heartbeat) -> None:
        values = self._presence()
        async with self.hub.db.session() as session:
            agent = await store.get(session, self.agent_id)
            if agent is None:
                return
            values["metrics"] = self._merged_metrics(agent, beat)
            if beat.health is not None:
                values["health"] = beat.health
            if agent.status == "offline":
                # The reaper gave up on this connection a moment too early; it is alive.
                values.update(status="online", status_changed_at=self.hub.agents.clock.now())
            changed = "status" in values or values.get("health", agent.health) != agent.health
            updated = await store.set_state_if_connection(
                session, self.agent_id, self.live.connection_id, **values
            )
        if updated:
            for hook in self.hub.agent_messages.renewed:
                await hook(self.live)
        await self._present()
        if updated and changed:
            await self.hub.relay.status(
                self.agent_id,
                status=str(values.get("status", agent.status)),
                health=str(values.get("health", agent.health)),
                message=agent.status_message,
            )
        await self.live.send({"type": "heartbeat_ack", "timestamp": self.hub.agents.clock.now()})

    def _merged_metrics(self, agent: Agent, beat: Heartbeat | None) -> dict[str, Any]:
        metrics = dict(agent.metrics or {})
        add_in, add_out = self.live.take_counts()
        metrics["messagesIn"] = metrics.get("messagesIn", 0) + add_in
        metrics["messagesOut"] = metrics.get("messagesOut", 0) + add_out
        if beat is not None and beat.metrics is not None:
            metrics.update(beat.metrics.model_dump(by_alias=True))
        return metrics

    async def _status(self, report: StatusReport) -> None:
        values: dict[str, Any] = {
            "status": report.status,
            "status_message": report.message,
            "status_changed_at": self.hub.agents.clock.now(),
            **self._presence(),
        }
        if report.health is not None:
            values["health"] = report.health
        async with self.hub.db.session() as session:
            agent = await store.get(session, self.agent_id)
            updated = agent is not None and await store.set_state_if_connection(
                session, self.agent_id, self.live.connection_id, **values
            )
        if updated and agent is not None:
            await self.hub.relay.status(
                self.agent_id,
                status=report.status,
                health=report.health or agent.health,
                message=report.message,
                at=values["status_changed_at"],
            )

    async def _logs(self, batch: LogBatch) -> None:
        now = self.hub.agents.clock.now()
        rows = [
            {
                "agent_id": self.agent_id,
                "timestamp": record.timestamp or now,
                "level_no": LEVELS[record.level],
                "level": record.level,
                "message": record.message,
                "logger": record.logger,
                "source": "agent",
                "extra": record.extra,
                "received_at": now,
            }
            for record in batch.records
        ]
        admitted = await self.hub.agents.record_logs(self.agent_id, rows)
        if admitted.first_drop:  # told once a window, so that the answer is no flood either
            quota = self.hub.agents.log_quota
            await self._error(
                "Log quota exceeded",
                dropped=admitted.dropped,
                retryAfter=math.ceil(admitted.retry_after),
                maxRecords=quota.max_records,
                maxBytes=quota.max_bytes,
                window=quota.window,
            )

    async def _went_away(self, code: int | None) -> None:
        """Record that this connection ended, unless a newer one already took over."""
        now = self.hub.agents.clock.now()
        if self.live.restart_requested and code in (Close.RESTART, Close.NORMAL, Close.GOING_AWAY):
            values: dict[str, Any] = {
                "status": "restarting",
                "presence_expires_at": now + timedelta(seconds=self.settings.agent_restart_grace),
            }
        else:
            values = {
                "status": "offline",
                "health": "unknown",
                "presence_expires_at": None,
                "connected_at": None,
            }
        try:
            async with self.hub.db.session() as session:
                agent = await store.get(session, self.agent_id)
                if agent is None:
                    return
                values["metrics"] = self._merged_metrics(agent, None)
                updated = await store.set_state_if_connection(
                    session,
                    self.agent_id,
                    self.live.connection_id,
                    status_changed_at=now,
                    **values,
                )
            if updated:
                if self.hub.live.get(self.agent_id) is None:  # no newer connection here
                    await self.hub.broker.clear_presence(self.agent_id)
                await self.hub.relay.status(
                    self.agent_id,
                    status=values["status"],
                    health=values.get("health", agent.health),
                    at=now,
                )
        except Exception:
            log.exception("agent %s: could not record disconnect", self.agent_id)
