"""The audit log stays bounded (issue 12): floods of failed anonymous attempts are counted per
action and address and window instead of written one row each, and entries past the retention
are pruned in batches. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, inspect, select, text

from kai.auth.audit import AuditLog
from kai.auth.models import AuditEvent
from kai.container import Container as Hub
from kai.db import MIGRATIONS, Database, utcnow
from tests.helpers import Api, bearer


async def audit(client: httpx.AsyncClient, token: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/audit", params={"limit": 500, **params}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def rows(hub: Hub, permission: str) -> int:
    async with hub.db.session(write=False) as session:
        query = select(func.count()).where(AuditEvent.permission == permission)
        return await session.scalar(query) or 0


async def test_a_flood_of_failed_anonymous_attempts_is_counted_not_written_row_by_row(
    client: httpx.AsyncClient, api: Api, hub: Hub
) -> None:
    admin = await api.admin_token()
    for n in range(2000):
        hub.audit.auth("agent_connect", ok=False, client_ip="203.0.113.9", detail="bad token")
        if n % 500 == 0:  # the writer runs meanwhile
            await asyncio.sleep(0.06)
    hub.audit.auth("agent_connect", ok=False, client_ip="198.51.100.7", detail="bad token")
    # Neither successes nor an account's own failures are folded into counts.
    for _ in range(3):
        hub.audit.auth("agent_connect", ok=True, user_id="u-1", client_ip="203.0.113.9")
        hub.audit.auth("login", ok=False, user_id="u-1", client_ip="203.0.113.9")

    events = await audit(client, admin, permission="auth:agent_connect")
    failed = [e for e in events if not e["granted"]]
    flood = sorted(e["count"] for e in failed if e["clientIp"] == "203.0.113.9")
    assert flood == [1, 1999]  # the first at once, the rest of the window as one count
    assert [e["count"] for e in failed if e["clientIp"] == "198.51.100.7"] == [1]
    assert {e["detail"] for e in failed} == {"bad token"}
    assert [e["count"] for e in events if e["granted"]] == [1, 1, 1]
    logins = await audit(client, admin, permission="auth:login", userId="u-1")
    assert [e["count"] for e in logins] == [1, 1, 1]
    assert await rows(hub, "auth:agent_connect") == 6
    assert hub.audit.counted == 1999


async def test_a_new_window_writes_its_first_attempt_at_once(hub: Hub) -> None:
    log = AuditLog(hub.db, interval=0.05, batch_size=100, flood_window=0.2)
    log.start()
    try:
        for _ in range(3):
            log.auth("magic_link", ok=False, client_ip="192.0.2.1", detail="invalid")
            log.auth("magic_link", ok=False, client_ip="192.0.2.1", detail="expired")
            log.auth("magic_link", ok=False, client_ip="192.0.2.1", detail="invalid")
            await asyncio.sleep(0.25)
            await log.sweep()  # what the hub's loop does: closes the windows that ended
        await log.flush()
    finally:
        await log.close()
    async with hub.db.session(write=False) as session:
        found = await session.execute(
            select(AuditEvent.count, AuditEvent.detail)
            .where(AuditEvent.permission == "auth:magic_link")
            .order_by(AuditEvent.id)
        )
    assert [tuple(row) for row in found] == [(1, "invalid"), (2, "various")] * 3


async def test_entries_past_the_retention_are_pruned_in_batches(hub: Hub) -> None:
    now = utcnow()
    old = [
        {
            "timestamp": now - timedelta(days=100, minutes=n),
            "kind": "permission",
            "permission": "test:old",
            "granted": True,
        }
        for n in range(1200)
    ]
    recent = [
        {**row, "timestamp": now - timedelta(days=1), "permission": "test:new"} for row in old[:5]
    ]
    async with hub.db.session() as session:
        await session.execute(insert(AuditEvent), old + recent)
    assert await hub.audit.prune(older_than=timedelta(days=90), batch=500) == 1200
    assert await rows(hub, "test:old") == 0
    assert await rows(hub, "test:new") == 5
    assert await hub.audit.prune(older_than=timedelta(days=90), batch=500) == 0


def _alembic(url: str, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    getattr(command, action)(config, revision)


async def _count_column(url: str) -> list[Any]:
    db = Database(url)
    try:
        async with db.session(write=False) as session:
            columns = await session.run_sync(
                lambda sync: inspect(sync.connection()).get_columns("audit_events")
            )
    finally:
        await db.dispose()
    return [c for c in columns if c["name"] == "count"]


async def test_migration_0008_adds_the_count_and_takes_it_back(database_url: str) -> None:
    await asyncio.to_thread(_alembic, database_url, "upgrade", "head")
    assert len(await _count_column(database_url)) == 1
    await asyncio.to_thread(_alembic, database_url, "downgrade", "0007")
    assert await _count_column(database_url) == []
    await asyncio.to_thread(_alembic, database_url, "upgrade", "head")
    db = Database(database_url)
    try:
        async with db.session() as session:  # rows written without it count one attempt
            await session.execute(
                text(
                    "INSERT INTO audit_events (timestamp, kind, permission, granted)"
                    " VALUES (:t, 'auth', 'test:migrated', :g)"
                ),
                {"t": utcnow(), "g": True},
            )
        async with db.session(write=False) as session:
            count = await session.scalar(
                select(AuditEvent.count).where(AuditEvent.permission == "test:migrated")
            )
    finally:
        await db.dispose()
    assert count == 1
