"""The agent routes: their shapes, who sees which agent, and who may delete."""

from __future__ import annotations

from typing import Any

from tests.agents.support import HubServer, People, Person, agent_socket
from tests.helpers import assert_problem

ENRICHED = {"status", "health", "metrics", "capabilities", "lastActivity"}


async def test_create_list_get_update(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")

    response = await ann.call(
        "POST",
        "/api/agents",
        json={
            "agentData": {
                "name": "writer",
                "description": "writes",
                "type": "llm",
                "config": {"model": "x"},
            }
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True
    assert body["status"] == "offline"
    token = body["agentToken"]
    assert isinstance(token, str)
    assert len(token) >= 32
    agent_id = body["agentId"]
    agent = body["agent"]
    assert agent["id"] == agent_id
    assert (agent["name"], agent["description"], agent["type"]) == ("writer", "writes", "llm")
    assert agent["config"] == {"model": "x"}
    assert agent["ownerId"] == ann.user_id
    assert ENRICHED <= agent.keys()
    assert token not in response.text.replace(token, "", 1)  # shown exactly once

    listed = await ann.call("GET", "/api/agents")
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 1
    assert page["timestamp"].endswith("Z")
    [row] = page["agents"]
    assert row["id"] == agent_id
    assert ENRICHED <= row.keys()
    assert (row["status"], row["health"], row["lastActivity"]) == ("offline", "unknown", None)
    assert row["metrics"]["reconnects"] == 0

    got = await ann.call("GET", f"/api/agents/{agent_id}")
    assert got.status_code == 200
    assert token not in got.text
    assert got.json()["name"] == "writer"

    updated = await ann.call(
        "PUT",
        f"/api/agents/{agent_id}",
        json={"updates": {"name": "author", "description": "writes", "config": {"model": "y"}}},
    )
    assert updated.status_code == 200, updated.text
    change = updated.json()
    assert change["success"] is True
    assert sorted(change["updatedFields"]) == ["config", "name"]
    assert change["agent"]["name"] == "author"
    assert (await ann.agent(agent_id))["config"] == {"model": "y"}

    bad = await ann.call("PUT", f"/api/agents/{agent_id}", json={"updates": {"owner": "me"}})
    assert_problem(bad, 422)


async def test_nobody_sees_anyone_elses_agent(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com", role="developer")  # may delete, but not this
    admin = await people.admin()
    anns = await ann.create_agent("anns")
    bobs = await bob.create_agent("bobs")

    for response in await every_route(bob, anns.agent_id):
        assert_problem(response, 404, "Agent not found")
    for response in await every_route(admin, "no-such-agent"):
        assert_problem(response, 404, "Agent not found")

    assert [a["id"] for a in await ann.agents()] == [anns.agent_id]
    assert [a["id"] for a in await bob.agents()] == [bobs.agent_id]
    assert {anns.agent_id, bobs.agent_id} <= {a["id"] for a in await admin.agents()}
    # The admin reads and changes any agent.
    assert (await admin.agent(bobs.agent_id))["ownerId"] == bob.user_id
    response = await admin.call(
        "PUT", f"/api/agents/{anns.agent_id}", json={"updates": {"description": "seen"}}
    )
    assert response.status_code == 200, response.text

    # Bob's attempts changed nothing: same name, and the token still connects.
    view = await ann.agent(anns.agent_id)
    assert (view["name"], view["ownerId"]) == ("anns", ann.user_id)
    async with agent_socket(server.ws_url, anns.token) as raw:
        assert raw.welcome["agentId"] == anns.agent_id


async def every_route(person: Person, agent_id: str) -> list[Any]:
    base = f"/api/agents/{agent_id}"
    return [
        await person.call("GET", base),
        await person.call("PUT", base, json={"updates": {"name": "taken"}}),
        await person.call("GET", f"{base}/status"),
        await person.call("POST", f"{base}/restart"),
        await person.call("DELETE", base),
        await person.call("POST", f"{base}/token"),
        await person.call("GET", f"{base}/logs"),
    ]


async def test_only_roles_with_agents_delete_may_delete(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")  # role user
    created = await ann.create_agent()

    response = await ann.call("DELETE", f"/api/agents/{created.agent_id}")

    assert_problem(response, 403, "Insufficient permissions: agents:delete")
    assert (await ann.agent(created.agent_id))["id"] == created.agent_id
    # Everything else on her own agent she may do.
    response = await ann.call("PUT", f"/api/agents/{created.agent_id}", json={"updates": {}})
    assert response.status_code == 200
    assert response.json()["updatedFields"] == []

    dev = await people.join("dev@example.com", role="developer")
    mine = await dev.create_agent()
    response = await dev.call("DELETE", f"/api/agents/{mine.agent_id}", params={"backup": "false"})
    assert response.status_code == 200, response.text
    assert_problem(await dev.call("GET", f"/api/agents/{mine.agent_id}"), 404)


async def test_routes_need_an_access_token(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    for method, path in [
        ("GET", "/api/agents"),
        ("POST", "/api/agents"),
        ("GET", f"/api/agents/{created.agent_id}"),
        ("GET", f"/api/agents/{created.agent_id}/logs"),
        ("POST", f"/api/agents/{created.agent_id}/token"),
    ]:
        assert_problem(await server.client.request(method, path), 401)


async def test_text_postgresql_cannot_store_is_refused_not_a_crash(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")

    for data in ({"name": "a\x00b"}, {"name": "tab\there"}, {"name": "x", "description": "\x00"}):
        response = await ann.call("POST", "/api/agents", json={"agentData": data})
        assert_problem(response, 422)
    created = await ann.create_agent("ok", description="two\nlines", config={"k\x00": "v\x00"})
    response = await ann.call(
        "PUT", f"/api/agents/{created.agent_id}", json={"updates": {"type": "\x00"}}
    )
    assert_problem(response, 422)
    view = await ann.agent(created.agent_id)
    assert (view["description"], view["config"]) == ("two\nlines", {"k\x00": "v\x00"})
