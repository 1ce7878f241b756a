"""Bounded growth of agents (issue 12): each agent's log quota, records and bytes per window,
and the number of agents one account may own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import insert

from kai.agents.models import AgentLog
from kai.agents.quota import LogQuota
from kai.container import Container as Hub
from kai.db import utcnow
from kai.kit.counters import COUNTS
from tests.agents.conftest import ServerStarter
from tests.agents.support import People, agent_socket
from tests.helpers import Api, assert_problem, bearer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_quota_takes_records_in_order_until_one_does_not_fit() -> None:
    clock = Clock()
    quota = LogQuota(window=10, max_records=5, max_bytes=100, clock=clock)
    first = quota.admit("a", [10, 10, 10])
    assert (first.kept, first.dropped, first.first_drop) == (3, 0, False)
    over = quota.admit("a", [10, 10, 10])  # the sixth record is one too many
    assert (over.kept, over.dropped, over.first_drop, over.retry_after) == (2, 1, True, 10)
    clock.now += 4
    later = quota.admit("a", [1])  # over once, nothing more this window, and no second notice
    assert (later.kept, later.dropped, later.first_drop, later.retry_after) == (0, 1, False, 6)
    assert quota.admit("b", [100]).kept == 1  # every agent has its own
    assert quota.admit("b", [1]).kept == 0  # bytes count as well as records
    clock.now += 6
    fresh = quota.admit("a", [60, 60])
    assert (fresh.kept, fresh.dropped, fresh.first_drop) == (1, 1, True)


async def test_an_agent_over_its_log_quota_is_told_once_and_its_records_dropped(
    start_server: ServerStarter,
) -> None:
    async with start_server(
        agent_log_window=1.5,
        agent_log_records_per_window=50,
        agent_log_bytes_per_window=4096,
        agent_heartbeat_timeout=5.0,
    ) as server:
        people = People(server)
        ann = await people.join("ann@example.com")
        created = await ann.create_agent()
        dropped_before = COUNTS.agent_logs_dropped
        async with agent_socket(server.ws_url, created.token) as agent:
            await agent.hello()
            records = [{"message": f"line {i}"} for i in range(30)]
            for _ in range(4):  # 120 records, 50 fit
                await agent.send({"type": "log", "records": records})
            notice = await agent.recv_type("error")
            assert notice["error"] == "Log quota exceeded"
            assert (notice["maxRecords"], notice["maxBytes"], notice["window"]) == (50, 4096, 1.5)
            assert notice["dropped"] == 10
            assert 1 <= notice["retryAfter"] <= 2
            await agent.heartbeat()  # and no second notice came before its answer
            assert COUNTS.agent_logs_dropped - dropped_before == 70
            await ann.wait_logs(created.agent_id, "line 19", count=2)
            page = await ann.logs(created.agent_id, limit=1000)
            assert page["total"] == 50

            # Big records run out of bytes first; the next window takes records again.
            await asyncio.sleep(1.6)
            await agent.send({"type": "log", "records": [{"message": "x" * 1500}] * 4})
            notice = await agent.recv_type("error")
            assert notice["error"] == "Log quota exceeded"
            assert notice["dropped"] == 2
            await agent.heartbeat()
        assert (await ann.logs(created.agent_id, limit=1000))["total"] == 52


async def test_an_account_owns_at_most_its_cap_of_agents_admins_any(
    start_server: ServerStarter,
) -> None:
    async with start_server(max_agents_per_user=3) as server:
        people = People(server)
        ann = await people.join("ann@example.com")
        made = [await ann.create_agent(f"a{i}") for i in range(3)]
        response = await ann.call("POST", "/api/agents", json={"agentData": {"name": "a3"}})
        assert_problem(
            response,
            409,
            "Agent limit reached: an account may own at most 3 agents;"
            " delete one first (or ask an admin)",
        )
        assert response.json()["limit"] == 3
        assert len(await ann.agents()) == 3
        # Deleting one (users may not: an admin does) makes room again.
        admin = await people.admin()
        deleted = await admin.call("DELETE", f"/api/agents/{made[0].agent_id}?backup=false")
        assert deleted.status_code == 200, deleted.text
        await ann.create_agent("a3")
        for i in range(5):
            await admin.create_agent(f"admin{i}")


async def test_log_records_past_the_retention_are_pruned_in_batches(
    client: httpx.AsyncClient, api: Api, hub: Hub
) -> None:
    admin = bearer(await api.admin_token())
    created = await client.post("/api/agents", json={"agentData": {"name": "old"}}, headers=admin)
    agent_id = created.json()["agentId"]
    now = utcnow()
    rows = [
        {
            "agent_id": agent_id,
            "timestamp": now - timedelta(days=8 if n < 12_000 else 1, seconds=n),
            "level_no": 20,
            "level": "INFO",
            "message": f"m{n}",
            "source": "agent",
            "received_at": now,
        }
        for n in range(12_010)
    ]
    async with hub.db.session() as session:
        await session.execute(insert(AgentLog), rows)
    assert await hub.agents.prune_logs(older_than=timedelta(days=7)) == 12_000
    page = await client.get(f"/api/agents/{agent_id}/logs", params={"limit": 100}, headers=admin)
    assert page.json()["total"] == 10
