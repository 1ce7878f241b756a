"""The agent registry: create, read, update, rotate, restart, delete and restore agents.

Routes own the transaction where there is one; ``restart`` owns its own short ones, because it
waits for the agent and must not hold a database lock while it does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents import backup, store
from kai.agents.live import LiveAgents
from kai.agents.models import Agent, AgentLog
from kai.agents.quota import Admitted, LogQuota, log_size
from kai.agents.relay import Relay
from kai.auth.tokens import digest, new_secret
from kai.config import Settings
from kai.db import Database, after_commit, delete_before
from kai.errors import Conflict, NotFound
from kai.kit.batch import BatchWriter
from kai.kit.clock import Clock
from kai.kit.counters import COUNTS
from kai.protocol.agent import Close
from kai.protocol.control import Kick
from kai.realtime.broker import Broker
from kai.realtime.events import Event
from kai.storage import Blobs, LocalDisk

log = logging.getLogger("kai.agents")
AGENT_NOT_FOUND = "Agent not found"
TOKEN_PREFIX = "kai_agent_"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: an admin sees every agent, anyone else only their own."""

    user_id: str
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Restarted:
    success: bool
    previous_status: str
    current_status: str
    restart_time: float | None
    restarted_at: datetime | None


def new_agent_token() -> str:
    return TOKEN_PREFIX + new_secret()


def effective_status(agent: Agent, now: datetime) -> str:
    """The status, unless the node that holds the agent stopped vouching for it."""
    if agent.presence_expires_at is None or agent.presence_expires_at <= now:
        return "offline"
    return agent.status


class Registry:
    """Everything the hub does to agents on behalf of people."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        live: LiveAgents,
        relay: Relay,
        broker: Broker,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.clock = clock  # what statuses, uptimes and log ages are judged by
        self.backups = backup.Backups()  # the parts above register their tables
        self.backup_store: Blobs = LocalDisk(settings.data_dir / "backups" / "agents")
        self.db = db
        self.live = live
        self.relay = relay
        self.broker = broker
        self.log_quota = LogQuota(
            window=settings.agent_log_window,
            max_records=settings.agent_log_records_per_window,
            max_bytes=settings.agent_log_bytes_per_window,
        )
        # Log records are published at once and written behind, in batches.
        self.log_writer: BatchWriter[dict[str, Any]] = BatchWriter(
            "agent-logs",
            self._write_logs,
            interval=settings.log_flush_interval,
            batch_size=settings.log_batch_size,
        )

    async def _write_logs(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.session() as session:
            await store.add_logs(session, rows)

    async def record_logs(self, agent_id: str, rows: list[dict[str, Any]]) -> Admitted:
        """Keep the agent's log records and tell its watchers, as far as its quota goes; the
        rest are dropped and counted."""
        admitted = self.log_quota.admit(agent_id, [log_size(row) for row in rows])
        if admitted.dropped:
            COUNTS.agent_logs_dropped += admitted.dropped
            if admitted.first_drop:
                log.warning(
                    "agent %s is over its log quota; its records are dropped for %.1fs",
                    agent_id,
                    admitted.retry_after,
                )
            rows = rows[: admitted.kept]
        if rows:
            self.log_writer.extend(rows)
            await self.relay.logs(agent_id, rows)
        return admitted

    # -- reading -----------------------------------------------------------------------------

    async def visible(self, session: AsyncSession, viewer: Viewer, agent_id: str) -> Agent:
        """The agent, if ``viewer`` may see it; otherwise 404 (never 403: it might not exist)."""
        agent = await store.get(session, agent_id)
        if agent is None or (not viewer.is_admin and agent.owner_id != viewer.user_id):
            raise NotFound(AGENT_NOT_FOUND)
        return agent

    async def sees(self, session: AsyncSession, viewer: Viewer, agent_id: str) -> bool:
        """Whether ``viewer`` may see the agent (and so its work)."""
        agent = await store.get(session, agent_id)
        return agent is not None and (viewer.is_admin or agent.owner_id == viewer.user_id)

    async def list_visible(self, session: AsyncSession, viewer: Viewer) -> list[Agent]:
        owner = None if viewer.is_admin else viewer.user_id
        return list(await store.visible(session, owner_id=owner))

    def view(self, agent: Agent, now: datetime | None = None) -> dict[str, Any]:
        """The agent as the API shows it: its record enriched with live state."""
        now = now or self.clock.now()
        status = effective_status(agent, now)
        online = status != "offline"
        live = self.live.get(agent.id)
        metrics = dict(agent.metrics or {})
        metrics["reconnects"] = agent.reconnects
        last_activity = agent.last_activity
        if live is not None and live.ready:
            unflushed_in, unflushed_out = live.unflushed()
            metrics["messagesIn"] = metrics.get("messagesIn", 0) + unflushed_in
            metrics["messagesOut"] = metrics.get("messagesOut", 0) + unflushed_out
            last_activity = max(filter(None, (last_activity, live.last_activity)))
        connected_at = agent.connected_at if online else None
        return {
            "id": agent.id,
            "name": agent.name,
            "description": agent.description,
            "type": agent.type,
            "config": agent.config or {},
            "owner_id": agent.owner_id,
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
            "status": status,
            "health": agent.health if online else "unknown",
            "metrics": metrics,
            "capabilities": agent.capabilities or {},
            "last_activity": last_activity,
            "uptime": (now - connected_at).total_seconds() if connected_at else None,
            "status_message": agent.status_message if online else None,
            "status_changed_at": agent.status_changed_at,
        }

    # -- writing -----------------------------------------------------------------------------

    async def create(
        self,
        session: AsyncSession,
        *,
        owner_id: str,
        name: str,
        description: str | None,
        type: str,
        config: dict[str, Any],
        capped: bool = False,
    ) -> tuple[Agent, str]:
        """A new agent and its token (shown once; only the hash is kept). ``capped``: the owner
        may own at most ``KAI_MAX_AGENTS_PER_USER`` agents (409 past it)."""
        most = self.settings.max_agents_per_user
        if capped and await store.count_owned(session, owner_id) >= most:
            raise Conflict(
                f"Agent limit reached: an account may own at most {most} agents;"
                " delete one first (or ask an admin)",
                limit=most,
            )
        token = new_agent_token()
        now = self.clock.now()
        agent = Agent(
            owner_id=owner_id,
            name=name,
            description=description,
            type=type,
            config=config,
            token_hash=digest(token),
            token_rotated_at=now,
            status="offline",
            health="unknown",
            capabilities={},
            metrics={},
            created_at=now,
            updated_at=now,
            status_changed_at=now,
        )
        session.add(agent)
        await session.flush()
        return agent, token

    async def update(
        self, session: AsyncSession, agent: Agent, changes: dict[str, Any]
    ) -> list[str]:
        """Apply ``changes`` (name, description, type, config); returns the fields that changed."""
        changed = [k for k, v in changes.items() if getattr(agent, k) != v]
        for key in changed:
            setattr(agent, key, changes[key])
        if changed:
            agent.updated_at = self.clock.now()
            await session.flush()
        return changed

    async def rotate_token(self, session: AsyncSession, agent: Agent) -> tuple[str, datetime]:
        """A new token for ``agent``; the old one stops working and its socket is closed."""
        token = new_agent_token()
        agent.token_hash = digest(token)
        agent.token_rotated_at = agent.updated_at = self.clock.now()
        await session.flush()
        self._close_after_commit(session, agent.id, Close.TOKEN_REVOKED, "Token rotated")
        return token, agent.token_rotated_at

    async def delete(self, session: AsyncSession, agent: Agent, *, keep_backup: bool) -> str | None:
        """Remove ``agent`` (after writing its backup, when asked); returns the backup's id.

        Call ``flush_logs`` before ``session`` begins, so that the backup holds every record.
        """
        backup_id = None
        work = await self.backups.work_of(session, agent.id)
        if keep_backup:
            logs = await store.all_logs(session, agent.id)
            backup_id = await backup.write(self.backup_store, agent=agent, logs=logs, work=work)
        else:
            self.backups.discard(session, work)
        await store.remove(session, agent.id)
        self._close_after_commit(session, agent.id, Close.DELETED, "Agent deleted")
        after_commit(session, lambda: self._forget(agent.id))
        return backup_id

    async def _forget(self, agent_id: str) -> None:
        """After a deletion: close every watcher's socket and drop the event log."""
        await self.broker.broadcast(
            Kick(agent_id=agent_id, code=4004, reason="Agent deleted").wire()
        )
        await self.broker.forget(agent_id)

    def _close_after_commit(
        self, session: AsyncSession, agent_id: str, code: int, reason: str
    ) -> None:
        after_commit(session, lambda: self.relay.close_soon(agent_id, code, reason))

    async def restart(
        self, viewer: Viewer, agent_id: str, *, timeout: float, reason: str | None
    ) -> Restarted:
        """Ask the agent to restart and wait until it is back (or ``timeout`` runs out).

        The agent may come back on any node: what is awaited is its ``online`` event after the
        ``restarting`` one, which every node sees.
        """
        async with self.db.session(write=False) as session:
            agent = await self.visible(session, viewer, agent_id)
        previous = effective_status(agent, self.clock.now())
        if previous == "offline":
            raise Conflict("Agent is offline; only a connected agent can be restarted")
        back: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        restarting = False

        def watch(event: Event) -> None:
            nonlocal restarting
            message = event.message
            if message.get("type") != "status_update":
                return
            if message.get("status") == "restarting":
                restarting = True
            elif restarting and message.get("status") == "online" and not back.done():
                back.set_result(None)

        started = time.monotonic()
        await self.broker.subscribe(agent_id, watch)
        try:
            await self._set_status(agent_id, status="restarting", health=agent.health)
            asked = await self.relay.deliver(
                agent_id, {"type": "restart", "reason": reason or "requested"}, restart=True
            )
            if not asked:
                await self._set_status(agent_id, status=previous, health=agent.health)
                raise Conflict("Agent is not connected; only a connected agent can be restarted")
            try:
                await asyncio.wait_for(asyncio.shield(back), timeout)
            except TimeoutError:
                pass
        finally:
            await self.broker.unsubscribe(agent_id, watch)
        if not back.done():
            await self._give_up_restart(agent, previous)
        async with self.db.session(write=False) as session:
            agent = await self.visible(session, viewer, agent_id)
        current = effective_status(agent, self.clock.now())
        if not back.done():
            return Restarted(False, previous, current, None, None)
        return Restarted(
            True, previous, current, round(time.monotonic() - started, 3), self.clock.now()
        )

    async def _set_status(self, agent_id: str, *, status: str, health: str) -> None:
        now = self.clock.now()
        async with self.db.session() as session:
            await store.set_state(session, agent_id, status=status, status_changed_at=now)
        await self.relay.status(agent_id, status=status, health=health, at=now)

    async def _give_up_restart(self, agent: Agent, previous: str) -> None:
        """An agent that kept its connection and ignored the restart is as it was before."""
        if agent.connection_id is None:
            return
        now = self.clock.now()
        async with self.db.session() as session:
            kept = await store.set_state_if_connection(
                session, agent.id, agent.connection_id, status=previous, status_changed_at=now
            )
        if kept and self.live.get(agent.id) is not None:
            live = self.live.get(agent.id)
            if live is not None:
                live.restart_requested = False
        if kept:
            await self.relay.status(agent.id, status=previous, health=agent.health, at=now)

    async def status_event(self, agent_id: str) -> dict[str, Any]:
        """The agent's current status as a ``status_update`` body (for snapshots)."""
        async with self.db.session(write=False) as session:
            agent = await store.get(session, agent_id)
        if agent is None:
            return {
                "status": "offline",
                "health": "unknown",
                "statusMessage": None,
                "timestamp": self.clock.now(),
            }
        view = self.view(agent)
        return {
            "status": view["status"],
            "health": view["health"],
            "statusMessage": view["status_message"],
            "timestamp": view["status_changed_at"],
        }

    async def restore(self, session: AsyncSession, archive: Path) -> Agent:
        """Bring back a deleted agent from its backup archive."""
        data = await asyncio.to_thread(backup.read, archive)
        return await self.backups.restore(session, data)

    async def flush_logs(self) -> None:
        """Write the log records this node holds. Call it before a unit of work begins: on
        SQLite an open transaction would neither see them nor let them be written."""
        await self.log_writer.flush()

    async def logs(
        self,
        session: AsyncSession,
        agent_id: str,
        *,
        start: datetime | None,
        end: datetime | None,
        min_level: int | None,
        limit: int,
        offset: int,
        newest_first: bool,
    ) -> tuple[Sequence[AgentLog], int]:
        return await store.logs(
            session,
            agent_id,
            start=start,
            end=end,
            min_level=min_level,
            limit=limit,
            offset=offset,
            newest_first=newest_first,
        )

    async def expire_presence(self) -> list[str]:
        """Mark offline the agents whose holding node stopped renewing their presence."""
        now = self.clock.now()
        async with self.db.session() as session:
            expired = await store.expire_presence(session, now)
        for agent_id in expired:
            # What is announced is the state as it is now: the agent may already be back on
            # another node, whose "online" must not be followed by a stale "offline".
            current = await self.status_event(agent_id)
            await self.relay.status(
                agent_id,
                status=current["status"],
                health=current["health"],
                message=current["statusMessage"],
                at=current["timestamp"],
            )
        return expired

    async def prune_logs(self, *, older_than: timedelta) -> int:
        """Delete the log records older than ``older_than``, in batches."""
        before = self.clock.now() - older_than
        return await delete_before(self.db, AgentLog.id, AgentLog.timestamp, before)
