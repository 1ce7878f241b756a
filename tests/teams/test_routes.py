"""``/api/teams`` and ``/api/agents/{agentId}/grants`` over real HTTP: a team's life, what its
bodies must hold, whose teams and grants each person sees, and what goes with a deleted team
or agent."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx

from tests.agents.support import People, Person
from tests.helpers import assert_problem, bearer
from tests.teams.support import body


async def new_team(person: Person, name: str, agent_ids: list[str], **fields: Any) -> str:
    response = await person.call(
        "POST", "/api/teams", json={"name": name, "agentIds": agent_ids, **fields}
    )
    return str(body(response, 201)["id"])


async def grant(person: Person, agent_id: str, **fields: Any) -> httpx.Response:
    return await person.call("POST", f"/api/agents/{agent_id}/grants", json=fields)


async def grants_of(person: Person, agent_id: str) -> list[dict[str, Any]]:
    listed = body(await person.call("GET", f"/api/agents/{agent_id}/grants"))
    assert listed["total"] == len(listed["grants"])
    found: list[dict[str, Any]] = listed["grants"]
    return found


async def test_an_owner_creates_reads_updates_and_deletes_a_team(people: People) -> None:
    ann = await people.join("ann@example.com")
    one, two, three = [(await ann.create_agent(name)).agent_id for name in ("a", "b", "c")]

    response = await ann.call(
        "POST",
        "/api/teams",
        json={"name": "  research ", "description": "finds things", "agentIds": [two, one, two]},
    )
    created = body(response, 201)
    team_id = created["id"]
    assert created == {
        "id": team_id,
        "name": "research",
        "description": "finds things",
        "ownerId": ann.user_id,
        "agentIds": sorted([one, two]),
        "channelUrl": f"/ws/teams/{team_id}",
        "createdAt": created["createdAt"],
        "updatedAt": created["createdAt"],
    }
    assert created["createdAt"].endswith("Z")
    assert body(await ann.call("GET", f"/api/teams/{team_id}")) == created
    assert body(await ann.call("GET", "/api/teams")) == {"teams": [created], "total": 1}

    # Only the fields given change; agentIds replaces the members.
    renamed = body(await ann.call("PUT", f"/api/teams/{team_id}", json={"name": "search"}))
    assert (renamed["name"], renamed["description"], renamed["agentIds"]) == (
        "search",
        "finds things",
        sorted([one, two]),
    )
    assert datetime.fromisoformat(renamed["updatedAt"]) >= datetime.fromisoformat(
        created["updatedAt"]
    )
    members = await ann.call("PUT", f"/api/teams/{team_id}", json={"agentIds": [three, one]})
    assert body(members)["agentIds"] == sorted([one, three])
    cleared = body(
        await ann.call("PUT", f"/api/teams/{team_id}", json={"description": None, "agentIds": []})
    )
    assert (cleared["name"], cleared["description"], cleared["agentIds"]) == ("search", None, [])
    assert body(await ann.call("GET", f"/api/teams/{team_id}")) == cleared

    deleted = await ann.call("DELETE", f"/api/teams/{team_id}")
    assert body(deleted) == {"success": True, "teamId": team_id}
    assert_problem(await ann.call("GET", f"/api/teams/{team_id}"), 404, "Team not found")
    assert_problem(await ann.call("DELETE", f"/api/teams/{team_id}"), 404, "Team not found")
    assert_problem(
        await ann.call("PUT", f"/api/teams/{team_id}", json={"name": "x"}), 404, "Team not found"
    )
    assert body(await ann.call("GET", "/api/teams")) == {"teams": [], "total": 0}
    # The agents stay.
    assert len(await ann.agents()) == 3


async def test_team_bodies_are_checked(people: People) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    mine = (await ann.create_agent("mine")).agent_id
    theirs = (await bob.create_agent("theirs")).agent_id

    for bad, field in [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "ok", "description": "d" * 4001}, "description"),
        ({"name": "ok", "agentIds": "not a list"}, "agentIds"),
        ({"name": "ok", "agentIds": [""]}, "agentIds.0"),
        ({"name": "ok", "agentIds": ["x"] * 501}, "agentIds"),
        ({"name": "ok", "members": [mine]}, "members"),
    ]:
        response = await ann.call("POST", "/api/teams", json=bad)
        assert_problem(response, 422, "Invalid request")
        assert field in [e["field"] for e in response.json()["errors"]], (bad, response.json())
    not_json = await ann.server.client.post(
        "/api/teams",
        content=b"{",
        headers={**bearer(ann.token), "Content-Type": "application/json"},
    )
    assert_problem(not_json, 400, "Request body is not valid JSON")

    # Members are the owner's own agents: another's is as unknown as one that does not exist.
    for strangers in ([theirs], ["no-such-agent"], [mine, theirs]):
        response = await ann.call("POST", "/api/teams", json={"name": "t", "agentIds": strangers})
        assert_problem(response, 404, "Agent not found")
        assert response.json()["agentIds"] == [a for a in strangers if a != mine]

    team_id = await new_team(ann, "crew", [mine])
    response = await ann.call("POST", "/api/teams", json={"name": "crew"})
    assert_problem(response, 409, "You already have a team named 'crew'")
    other = await new_team(ann, "other", [mine])
    response = await ann.call("PUT", f"/api/teams/{other}", json={"name": "crew"})
    assert_problem(response, 409, "You already have a team named 'crew'")
    response = await ann.call("PUT", f"/api/teams/{team_id}", json={"agentIds": [mine, theirs]})
    assert_problem(response, 404, "Agent not found")
    assert_problem(
        await ann.call("PUT", f"/api/teams/{team_id}", json={"name": ""}), 422, "Invalid request"
    )
    # Nothing of the refused changes stuck.
    team = body(await ann.call("GET", f"/api/teams/{team_id}"))
    assert (team["name"], team["agentIds"]) == ("crew", [mine])
    # Names are unique per owner only.
    assert await new_team(bob, "crew", [theirs])
    # The same name again is no change, and no conflict.
    same = await ann.call("PUT", f"/api/teams/{team_id}", json={"name": "crew"})
    assert body(same)["name"] == "crew"


async def test_grants_are_made_listed_and_taken_back(people: People) -> None:
    ann = await people.join("ann@example.com")
    boss, one, two = [(await ann.create_agent(name)).agent_id for name in ("boss", "a", "b")]
    team_id = await new_team(ann, "workers", [one, two])

    made = body(await grant(ann, boss, targetAgentId=one, actions=["task", "command", "task"]), 201)
    assert made == {
        "id": made["id"],
        "agentId": boss,
        "targetAgentId": one,
        "targetTeamId": None,
        "actions": ["command", "task"],
        "createdBy": ann.user_id,
        "createdAt": made["createdAt"],
    }
    on_team = body(await grant(ann, boss, targetTeamId=team_id, actions=["stream", "watch"]), 201)
    assert (on_team["targetAgentId"], on_team["targetTeamId"]) == (None, team_id)
    assert await grants_of(ann, boss) == [made, on_team]
    assert await grants_of(ann, one) == []

    assert body(await ann.call("DELETE", f"/api/agents/{boss}/grants/{made['id']}")) == {
        "success": True,
        "grantId": made["id"],
    }
    assert await grants_of(ann, boss) == [on_team]
    for path in (
        f"/api/agents/{boss}/grants/{made['id']}",  # gone already
        f"/api/agents/{one}/grants/{on_team['id']}",  # not that agent's grant
        f"/api/agents/{boss}/grants/no-such-grant",
    ):
        assert_problem(await ann.call("DELETE", path), 404, "Grant not found")
    assert await grants_of(ann, boss) == [on_team]

    # Exactly one target, not the grantee itself, and known actions.
    wrong: list[tuple[dict[str, Any], str]] = [
        ({"actions": ["task"]}, "Name exactly one target: targetAgentId or targetTeamId"),
        (
            {"targetAgentId": one, "targetTeamId": team_id, "actions": ["task"]},
            "Name exactly one target: targetAgentId or targetTeamId",
        ),
        ({"targetAgentId": boss, "actions": ["task"]}, "An agent needs no grant to reach itself"),
    ]
    for fields, detail in wrong:
        assert_problem(await grant(ann, boss, **fields), 400, detail)
    for fields in (
        {"targetAgentId": one, "actions": []},
        {"targetAgentId": one, "actions": ["delete"]},
        {"targetAgentId": one},
        {"targetAgentId": "", "actions": ["task"]},
        {"targetAgentId": one, "actions": ["task"], "expires": "never"},
    ):
        assert_problem(await grant(ann, boss, **fields), 422, "Invalid request")
    assert_problem(
        await grant(ann, boss, targetAgentId="no-such-agent", actions=["task"]),
        404,
        "Agent not found",
    )
    assert_problem(
        await grant(ann, boss, targetTeamId="no-such-team", actions=["task"]), 404, "Team not found"
    )
    assert_problem(
        await grant(ann, "no-such-agent", targetAgentId=one, actions=["task"]),
        404,
        "Agent not found",
    )
    assert await grants_of(ann, boss) == [on_team]


async def test_another_person_can_neither_see_nor_change_what_is_not_theirs(
    people: People,
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    boss, helper = [(await ann.create_agent(name)).agent_id for name in ("boss", "helper")]
    team_id = await new_team(ann, "ann's", [boss, helper])
    made = body(await grant(ann, boss, targetAgentId=helper, actions=["command"]), 201)
    own = (await bob.create_agent("bob's agent")).agent_id
    bobs_team = await new_team(bob, "bob's", [own])

    listed = body(await bob.call("GET", "/api/teams"))
    assert [t["id"] for t in listed["teams"]] == [bobs_team]
    assert listed["total"] == 1
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/api/teams/{team_id}", None),
        ("PUT", f"/api/teams/{team_id}", {"name": "mine now"}),
        ("PUT", f"/api/teams/{team_id}", {"agentIds": [own]}),
        ("DELETE", f"/api/teams/{team_id}", None),
    ]
    for method, path, payload in calls:
        assert_problem(await bob.call(method, path, json=payload), 404, "Team not found")
    calls = [
        ("GET", f"/api/agents/{boss}/grants", None),
        ("POST", f"/api/agents/{boss}/grants", {"targetAgentId": helper, "actions": ["task"]}),
        ("DELETE", f"/api/agents/{boss}/grants/{made['id']}", None),
    ]
    for method, path, payload in calls:
        assert_problem(await bob.call(method, path, json=payload), 404, "Agent not found")
    # Bob's own agent may not be granted anything on Ann's agents or team, nor be put in them.
    assert_problem(
        await grant(bob, own, targetAgentId=helper, actions=["command"]), 404, "Agent not found"
    )
    assert_problem(
        await grant(bob, own, targetTeamId=team_id, actions=["command"]), 404, "Team not found"
    )
    response = await bob.call("PUT", f"/api/teams/{bobs_team}", json={"agentIds": [own, boss]})
    assert_problem(response, 404, "Agent not found")
    assert response.json()["agentIds"] == [boss]

    # Nothing of Ann's changed.
    team = body(await ann.call("GET", f"/api/teams/{team_id}"))
    assert (team["name"], team["agentIds"]) == ("ann's", sorted([boss, helper]))
    assert await grants_of(ann, boss) == [made]
    assert await grants_of(bob, own) == []


async def test_an_admin_sees_and_manages_every_team(people: People) -> None:
    admin = await people.admin()
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    anns = (await ann.create_agent("a")).agent_id
    bobs = (await bob.create_agent("b")).agent_id
    ann_team = await new_team(ann, "ann's", [anns])
    bob_team = await new_team(bob, "bob's", [bobs])
    admin_team = await new_team(admin, "admin's", [(await admin.create_agent("c")).agent_id])

    listed = body(await admin.call("GET", "/api/teams"))
    assert [t["id"] for t in listed["teams"]] == [ann_team, bob_team, admin_team]
    assert [t["ownerId"] for t in listed["teams"]] == [ann.user_id, bob.user_id, admin.user_id]
    assert body(await ann.call("GET", "/api/teams"))["total"] == 1
    assert body(await admin.call("GET", f"/api/teams/{bob_team}"))["agentIds"] == [bobs]

    # An admin changes another's team, but its members stay its owner's agents.
    changed = await admin.call("PUT", f"/api/teams/{ann_team}", json={"description": "checked"})
    assert (body(changed)["description"], body(changed)["ownerId"]) == ("checked", ann.user_id)
    mixed = await admin.call("PUT", f"/api/teams/{ann_team}", json={"agentIds": [anns, bobs]})
    assert_problem(mixed, 404, "Agent not found")
    assert_problem(
        await admin.call("POST", "/api/teams", json={"name": "x", "agentIds": [anns]}),
        404,
        "Agent not found",
    )
    # ...and grants on another's agents, within that owner's agents only.
    helper = (await ann.create_agent("helper")).agent_id
    made = body(await grant(admin, anns, targetAgentId=helper, actions=["task"]), 201)
    assert made["createdBy"] == admin.user_id
    assert await grants_of(ann, anns) == [made]
    assert_problem(
        await grant(admin, anns, targetAgentId=bobs, actions=["task"]), 404, "Agent not found"
    )
    assert_problem(
        await grant(admin, anns, targetTeamId=bob_team, actions=["task"]), 404, "Team not found"
    )
    assert body(await admin.call("DELETE", f"/api/teams/{bob_team}"))["teamId"] == bob_team
    assert body(await bob.call("GET", "/api/teams"))["total"] == 0


async def test_a_deleted_team_or_agent_takes_what_names_it_along(people: People) -> None:
    ann = await people.join("ann@example.com", role="developer")  # may delete agents
    boss, one, two = [(await ann.create_agent(name)).agent_id for name in ("boss", "a", "b")]
    team_id = await new_team(ann, "workers", [one, two])
    other_team = await new_team(ann, "others", [one])
    on_team = body(await grant(ann, boss, targetTeamId=team_id, actions=["task"]), 201)
    on_other = body(await grant(ann, boss, targetTeamId=other_team, actions=["task"]), 201)
    on_one = body(await grant(ann, boss, targetAgentId=one, actions=["command"]), 201)
    on_two = body(await grant(ann, boss, targetAgentId=two, actions=["command"]), 201)
    from_one = body(await grant(ann, one, targetAgentId=two, actions=["stream"]), 201)

    await ann.call("DELETE", f"/api/teams/{team_id}")
    assert await grants_of(ann, boss) == [on_other, on_one, on_two]
    assert await grants_of(ann, one) == [from_one]

    # A deleted agent leaves its teams, and the grants to it and its own go with it.
    response = await ann.call("DELETE", f"/api/agents/{two}", params={"backup": "false"})
    assert response.status_code == 200, response.text
    assert await grants_of(ann, boss) == [on_other, on_one]
    assert await grants_of(ann, one) == []
    response = await ann.call("DELETE", f"/api/agents/{one}", params={"backup": "false"})
    assert response.status_code == 200, response.text
    assert await grants_of(ann, boss) == [on_other]
    assert body(await ann.call("GET", f"/api/teams/{other_team}"))["agentIds"] == []
    assert on_team not in await grants_of(ann, boss)


async def test_teams_are_created_beside_other_writes(people: People) -> None:
    ann = await people.join("ann@example.com")
    agent_id = (await ann.create_agent("a")).agent_id
    # Teams with and without members, at once: none may wait on another.
    created = await asyncio.wait_for(
        asyncio.gather(
            *(
                ann.call(
                    "POST", "/api/teams", json={"name": f"t{i}", "agentIds": [agent_id] * (i % 2)}
                )
                for i in range(4)
            )
        ),
        10,
    )
    assert [response.status_code for response in created] == [201] * 4
    assert body(await ann.call("GET", "/api/teams"))["total"] == 4
