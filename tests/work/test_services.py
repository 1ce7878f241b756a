"""``/api/services``: the node's components, and stopping and restarting them for real: a loop
stops running, a writer stops writing, the hosted demo agent goes offline and comes back."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.agents.conftest import ServerStarter
from tests.agents.support import HubServer, People, Person, eventually
from tests.helpers import assert_problem
from tests.work.support import payload


async def services(person: Person) -> dict[str, dict[str, Any]]:
    response = await person.call("GET", "/api/services")
    assert response.status_code == 200, response.text
    return {service["name"]: service for service in payload(response)["services"]}


async def act(person: Person, name: str, action: str) -> dict[str, Any]:
    response = await person.call("POST", f"/api/services/{name}/{action}")
    assert response.status_code == 200, response.text
    body = payload(response)
    assert body["success"] is True
    service: dict[str, Any] = body["service"]
    assert service["name"] == name
    return service


async def test_the_listing_shows_every_component_and_what_the_hub_serves(
    server: HubServer, people: People
) -> None:
    admin = await people.admin()
    response = await admin.call("GET", "/api/services")
    assert response.status_code == 200, response.text
    body = payload(response)
    assert body["node"] == server.hub.node_id
    assert body["apiEndpoint"].endswith("/api")
    assert body["webSocketEndpoint"].startswith("ws")
    assert "GET /api/services" in body["registeredRoutes"]
    assert "WEBSOCKET /ws/agents/{agentId}" in body["registeredRoutes"]
    assert {"command_execute", "heartbeat", "auth", "resume"} <= set(
        body["activeWebSocketHandlers"]
    )
    listed = {service["name"]: service for service in body["services"]}
    expected = {
        "database",
        "broker",
        "storage",
        "mail",
        "websockets",
        "audit-writer",
        "log-writer",
        "stream-chunk-writer",
        "command-record-writer",
        "presence-reaper",
        "task-dispatch",
        "lease-reaper",
        "stream-expiry",
        "log-retention",
        "audit-retention",
        "audit-floods",
        "hosted-agents",
    }
    assert expected <= set(listed)
    for service in listed.values():
        assert (service["state"], service["health"]) == ("running", "healthy"), service
    assert listed["database"]["actions"] == ["restart"]
    assert listed["broker"]["actions"] == []
    assert listed["task-dispatch"]["actions"] == ["restart", "stop"]


async def test_a_stopped_writer_stops_writing_until_it_is_restarted(
    server: HubServer, people: People
) -> None:
    admin = await people.admin()
    stopped = await act(admin, "audit-writer", "stop")
    assert (stopped["state"], stopped["health"]) == ("stopped", "stopped")
    written = stopped["counters"]["written"]
    for _ in range(3):
        await admin.call("GET", "/api/services")  # each call audits a permission check
    idle = (await services(admin))["audit-writer"]
    assert idle["counters"]["written"] == written
    assert idle["counters"]["pending"] >= 3

    restarted = await act(admin, "audit-writer", "restart")
    assert restarted["state"] == "running"

    async def caught_up() -> bool:
        writer = (await services(admin))["audit-writer"]["counters"]
        return bool(writer["written"] >= written + 3)

    await eventually(caught_up, 5, what="the restarted writer writing")


async def test_a_stopped_loop_stops_running_and_restarts(server: HubServer, people: People) -> None:
    admin = await people.admin()
    stopped = await act(admin, "presence-reaper", "stop")
    assert stopped["state"] == "stopped"
    runs = stopped["counters"]["runs"]
    every = stopped["counters"]["every"]
    await asyncio.sleep(every * 3)  # it would have run three times by now
    assert (await services(admin))["presence-reaper"]["counters"]["runs"] == runs

    restarted = await act(admin, "presence-reaper", "restart")
    assert restarted["state"] == "running"

    async def ran() -> bool:
        loop = (await services(admin))["presence-reaper"]
        return bool(loop["counters"]["runs"] > runs)

    await eventually(ran, 5, what="the restarted loop running")


async def test_the_hosted_demo_agent_stops_and_comes_back(start_server: ServerStarter) -> None:
    async with start_server(demo=True) as server:
        admin = await People(server).admin()

        async def demo_status(status: str) -> bool:
            agents = payload(await admin.call("GET", "/api/agents"))["agents"]
            return any(a["name"] == "demo" and a["status"] == status for a in agents)

        await eventually(lambda: demo_status("online"), 20, what="the demo agent online")
        stopped = await act(admin, "hosted-agents", "stop")
        assert stopped["state"] == "stopped"
        assert stopped["counters"]["running"] == 0
        await eventually(lambda: demo_status("offline"), 10, what="the demo agent offline")

        restarted = await act(admin, "hosted-agents", "restart")
        assert restarted["state"] == "running"
        await eventually(lambda: demo_status("online"), 20, what="the demo agent back")


async def test_actions_are_checked(server: HubServer, people: People) -> None:
    admin = await people.admin()
    assert_problem(await admin.call("POST", "/api/services/nothing/restart"), 404)
    refused = await admin.call("POST", "/api/services/broker/stop")
    assert_problem(refused, 409, "The service broker cannot stop")
    assert_problem(await admin.call("POST", "/api/services/database/stop"), 409)
    reconnected = await act(admin, "database", "restart")
    assert (reconnected["state"], reconnected["health"]) == ("running", "healthy")

    dev = await people.join("dev@example.com", role="developer")
    assert (await dev.call("GET", "/api/services")).status_code == 200
    assert (await act(dev, "task-dispatch", "restart"))["state"] == "running"
    assert_problem(
        await dev.call("POST", "/api/services/task-dispatch/stop"),
        403,
        "Insufficient permissions: services:stop",
    )
    user = await people.join("ann@example.com")
    assert_problem(await user.call("GET", "/api/services"), 403)
