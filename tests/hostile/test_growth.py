"""Bounded growth, against a real ``kai serve`` (issue 12): a flood of unauthenticated agent
connections adds a couple of audit rows, not one each, and audit entries go after their
retention; an agent that floods its log is cut to its quota while a neighbour's records all
arrive; an account owns at most its cap of agents."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.agents.support import agent_socket, refused
from tests.helpers import assert_problem, bearer
from tests.hostile.conftest import HubStarter, ServedHub

FLOOD = 600


async def audit(hub: ServedHub, **params: Any) -> list[dict[str, Any]]:
    async with hub.client() as client:
        response = await client.get(
            "/api/audit", params={"limit": 500, **params}, headers=await hub.admin()
        )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_a_flood_of_bad_agent_tokens_is_counted_and_audit_entries_expire(
    start_hub: HubStarter,
) -> None:
    # Entries live 6 s (the retention loop runs every 1.5 s); the flood window is longer.
    hub = start_hub(audit_retention_days=str(6 / 86400), audit_flood_window="120")
    url = f"{hub.ws_url}/ws/agent"
    started = time.monotonic()
    for _ in range(FLOOD // 50):
        closes = await asyncio.gather(*(refused(url, "kai_agent_forged") for _ in range(50)))
        assert set(closes) == {(1008, "Authentication failed")}
    flooded = time.monotonic() - started

    failed = [e for e in await audit(hub, permission="auth:agent_connect") if not e["granted"]]
    assert sum(e["count"] for e in failed) == FLOOD
    assert sorted(e["count"] for e in failed) == [1, FLOOD - 1]
    assert {(e["clientIp"], e["detail"]) for e in failed} == {("127.0.0.1", "bad token")}

    # Retention: the flood's entries are pruned by the hub's own loop.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not await audit(hub, permission="auth:agent_connect"):
            break
        await asyncio.sleep(0.5)
    assert await audit(hub, permission="auth:agent_connect") == []
    assert hub.alive(), hub.output()
    assert flooded < 30


async def test_a_log_flood_is_cut_to_the_quota_and_a_neighbour_loses_nothing(
    start_hub: HubStarter,
) -> None:
    hub = start_hub(
        agent_log_window="60",
        agent_log_records_per_window="2000",
        agent_log_bytes_per_window=str(1024 * 1024),
    )
    admin = await hub.admin()
    async with hub.client() as client:
        tokens = {}
        for name in ("flood", "quiet"):
            created = await client.post(
                "/api/agents", json={"agentData": {"name": name}}, headers=admin
            )
            tokens[name] = (created.json()["agentId"], created.json()["agentToken"])
        url = f"{hub.ws_url}/ws/agent"
        line = "x" * 4000
        async with (
            agent_socket(url, tokens["flood"][1]) as flood,
            agent_socket(url, tokens["quiet"][1]) as quiet,
        ):
            await flood.hello("flood")
            await quiet.hello("quiet")
            batch = {"type": "log", "records": [{"message": line}] * 100}  # ~400 KB a message
            started = time.monotonic()
            for _ in range(100):  # ~40 MB offered
                await flood.send(batch)
            notices = []
            await flood.send({"type": "heartbeat"})
            while (message := await flood.recv(10))["type"] != "heartbeat_ack":
                notices.append(message)
            offered = time.monotonic() - started
            for i in range(20):
                await quiet.send({"type": "log", "records": [{"message": f"quiet {i}"}]})
            await quiet.heartbeat()

        assert [n["error"] for n in notices] == ["Log quota exceeded"]  # told once
        flood_id, quiet_id = tokens["flood"][0], tokens["quiet"][0]
        kept = await client.get(f"/api/agents/{flood_id}/logs?limit=1", headers=admin)
        # 1 MiB of 4,000-byte records: 262 kept of 10,000 offered.
        assert kept.json()["total"] == 1024 * 1024 // 4000
        quiet_logs = await client.get(f"/api/agents/{quiet_id}/logs?limit=100", headers=admin)
        assert quiet_logs.json()["total"] == 20
        metrics = (await client.get("/metrics")).text
        assert "kai_agent_logs_dropped_total 9738.0" in metrics
    assert offered < 20
    assert hub.alive()


async def test_an_account_cannot_own_more_agents_than_its_cap(start_hub: HubStarter) -> None:
    hub = start_hub(max_agents_per_user="5")
    async with hub.client() as client:
        await client.post(
            "/api/auth/register",
            json={"userData": {"email": "eve@example.com", "password": "a long passphrase"}},
        )
        eve = bearer(await hub.login("eve@example.com", "a long passphrase"))

        async def create(n: int) -> int:
            body = {"agentData": {"name": f"eve{n}"}}
            return (await client.post("/api/agents", json=body, headers=eve)).status_code

        codes = await asyncio.gather(*(create(n) for n in range(12)))
        assert sorted(codes) == [201] * 5 + [409] * 7
        listed = await client.get("/api/agents", headers=eve)
        assert listed.json()["total"] == 5
        refused_one = await client.post(
            "/api/agents", json={"agentData": {"name": "more"}}, headers=eve
        )
        assert_problem(refused_one, 409)
        assert "at most 5 agents" in refused_one.json()["detail"]
