"""A team's channel: its members publish, its subscribers (agents, and people over
``/ws/teams/{teamId}``) get every message in publish order, numbered without a gap, and resume
after a disconnect with neither a gap nor a duplicate. Agents outside the team can neither
publish nor subscribe, and people see only the channels of their own teams."""

from __future__ import annotations

import asyncio
from typing import Any

from kai.protocol.agent import Close
from kai.sdk import Agent
from kai.sdk.client import KaiClient
from tests.agents.support import HubServer, People, eventually
from tests.realtime.client_support import Watcher
from tests.teams.support import (
    Crew,
    client_of,
    decisions,
    following,
    refused,
    register,
    watch_team,
)

NOT_MEMBER = "This agent is not a member of that team"


def check_numbered(messages: list[dict[str, Any]], *, after: int, epoch: str) -> None:
    """``messages`` are numbered ``after + 1, after + 2, ...`` in ``epoch``."""
    assert [m["seq"] for m in messages] == list(range(after + 1, after + 1 + len(messages))), [
        m["seq"] for m in messages
    ]
    assert {m["epoch"] for m in messages} == {epoch}


def said(messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Who said what, in the order it came."""
    return [(m["fromName"], m["data"]) for m in messages]


async def team_of(
    kai: KaiClient, crew: Crew, server: HubServer, names: list[str]
) -> tuple[str, dict[str, Agent], dict[str, str]]:
    """A team of running agents named ``names``: its id, the agents and their ids."""
    ids, tokens = await register(kai, *names)
    started = await crew.start_all(server.ws_url, tokens, *(Agent(name) for name in names))
    team = await kai.create_team("crew", [ids[n] for n in names], description="all hands")
    return str(team["id"]), dict(zip(names, started, strict=True)), ids


async def test_members_publish_and_every_subscriber_gets_each_message_in_order(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        team_id, agents, ids = await team_of(kai, crew, server, ["ada", "bea", "cy"])
        async with watch_team(server, team_id, ann.token) as person:
            snapshot = await person.recv()
            assert snapshot == {
                "type": "team_status",
                "teamId": team_id,
                "name": "crew",
                "agentIds": sorted(ids.values()),
                "seq": snapshot["seq"],
                "epoch": snapshot["epoch"],
                "snapshot": True,
            }
            head, epoch = snapshot["seq"], snapshot["epoch"]
            async with following(agents["cy"], team_id) as follower:
                opening = follower.messages[0]
                assert (opening["type"], opening["teamId"], opening["seq"]) == (
                    "team_status",
                    team_id,
                    head,
                )
                assert opening["agentIds"] == sorted(ids.values())

                # Turn by turn: each publish answers with the next seq.
                seqs = []
                for i in range(10):
                    name = ("ada", "bea")[i % 2]
                    seqs.append(await agents[name].team(team_id).publish({"i": i}, topic="turn"))
                assert seqs == list(range(head + 1, head + 11))
                # All at once, from three members: each member's messages keep their order.
                sent = await asyncio.gather(
                    *(
                        agents[name].team(team_id).publish({"n": n, "from": name})
                        for n in range(15)
                        for name in ("ada", "bea", "cy")
                    )
                )
                assert sorted(s for s in sent if s is not None) == list(range(head + 11, head + 56))

                got = await follower.has(55)
                watched = await person.take(55)
                assert follower.team_messages() == got[:55]
                check_numbered(got, after=head, epoch=epoch)
                check_numbered(watched, after=head, epoch=epoch)
                # The agent and the person got the very same messages.
                assert [(m["seq"], m["data"], m["topic"]) for m in watched] == [
                    (m["seq"], m["data"], m["topic"]) for m in got
                ]
                assert said(got[:10]) == [(("ada", "bea")[i % 2], {"i": i}) for i in range(10)]
                first = got[0]
                assert first == {
                    "type": "team_message",
                    "topic": "turn",
                    "fromAgentId": ids["ada"],
                    "fromName": "ada",
                    "data": {"i": 0},
                    "teamId": team_id,
                    "seq": head + 1,
                    "epoch": epoch,
                    "timestamp": first["timestamp"],
                }
                for name in ("ada", "bea", "cy"):
                    mine = [m["data"]["n"] for m in got[10:] if m["fromName"] == name]
                    assert mine == list(range(15)), (name, mine)
                # Each message at the seq its publisher was told.
                assert sorted(s for s in sent if s is not None) == [m["seq"] for m in got[10:]]
                await person.quiet()


async def test_a_watcher_resumes_after_a_disconnect_without_gap_or_duplicate(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        team_id, agents, _ = await team_of(kai, crew, server, ["ada"])
        channel = agents["ada"].team(team_id)

        async with watch_team(server, team_id, ann.token) as first:
            snapshot = await first.recv()
            epoch = snapshot["epoch"]
            for i in range(5):
                await channel.publish(i)
            seen = await first.take(5)
        check_numbered(seen, after=snapshot["seq"], epoch=epoch)
        last = seen[-1]["seq"]

        for i in range(5, 12):  # published while nobody watched
            await channel.publish(i)

        async with watch_team(server, team_id, ann.token, since=last, epoch=epoch) as again:
            head = await again.recv()
            assert (head["type"], head["snapshot"], head["seq"], head["epoch"]) == (
                "team_status",
                True,
                last,
                epoch,
            )
            missed = await again.take(7)
            check_numbered(missed, after=last, epoch=epoch)
            assert [m["data"] for m in missed] == list(range(5, 12))
            await again.quiet()
            await channel.publish(12)  # then live ones, numbered on
            live = await again.recv()
            assert (live["seq"], live["data"]) == (last + 8, 12)

            # The resume message, on the open socket, replays from its seq.
            await again.send({"type": "resume", "since": last + 5, "epoch": epoch})
            head = await again.recv()
            assert (head["type"], head["seq"]) == ("team_status", last + 5)
            replayed = await again.take(3)
            check_numbered(replayed, after=last + 5, epoch=epoch)
            assert [m["data"] for m in replayed] == [10, 11, 12]
            await again.quiet()

            # Out of reach: resync_required, with the channel's state.
            await again.send({"type": "resume", "since": last + 50, "epoch": epoch})
            resync = await again.recv()
            assert resync["type"] == "resync_required", resync
            assert (resync["teamId"], resync["seq"]) == (team_id, last + 8)
            assert resync["status"]["type"] == "team_status"

        # The client SDK's watch goes on from where it is told (what it had is not repeated).
        async with kai.watch_team(team_id, since=last + 6, epoch=epoch) as watch:
            events = aiter(watch)
            rest = [await anext(events) for _ in range(2)]
            assert [(m["seq"], m["data"]) for m in rest] == [(last + 7, 11), (last + 8, 12)]


async def test_an_agent_resubscribes_after_a_reconnect_and_misses_nothing(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        team_id, agents, ids = await team_of(kai, crew, server, ["ada", "bea"])
        channel = agents["ada"].team(team_id)
        async with following(agents["bea"], team_id) as follower:
            for i in range(5):
                await channel.publish(i)
            await follower.has(5)

            # The hub drops Bea's connection; she comes back by herself.
            live = server.hub.live.get(ids["bea"])
            assert live is not None
            await live.close(Close.GOING_AWAY, "Going away for the test")
            for i in range(5, 20):  # while she is away
                await channel.publish(i)

            async def back() -> bool:
                now = server.hub.live.get(ids["bea"])
                return now is not None and now is not live and now.ready

            await eventually(back, 10, what="Bea back on the hub")
            for i in range(20, 31):  # as she subscribes again, and after
                await channel.publish(i)
            got = await follower.has(31)
            assert [m["data"] for m in got] == list(range(31)), [m["data"] for m in got]
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(seqs[0], seqs[0] + 31))
            assert not [m for m in follower.messages if m.get("type") == "resync_required"]


async def test_only_members_publish_or_subscribe(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    async with client_of(ann) as kai, client_of(bob) as bobs:
        team_id, agents, ids = await team_of(kai, crew, server, ["ada", "bea"])
        outsider = await kai.create_agent("outsider")
        stranger = await bobs.create_agent("stranger")
        out = await crew.start(Agent("outsider"), server.ws_url, outsider["agentToken"])
        other = await crew.start(Agent("stranger"), server.ws_url, stranger["agentToken"])
        async with watch_team(server, team_id, ann.token) as person:
            snapshot = await person.recv()
            for agent in (out, other):
                channel = agent.team(team_id)
                assert (await refused(channel.publish("let me in"))).error == NOT_MEMBER
                assert (await refused(anext(channel.subscribe()))).error == NOT_MEMBER
            for unknown in ("no-such-team", "team:nested"):
                assert (await refused(out.team(unknown).publish(1))).error == NOT_MEMBER

            # Leaving the team ends the right to publish.
            assert await agents["bea"].team(team_id).publish("still in") == snapshot["seq"] + 1
            await kai.update_team(team_id, agentIds=[ids["ada"]])
            refusal = await refused(agents["bea"].team(team_id).publish("out now"))
            assert refusal.error == NOT_MEMBER
            # Only the member's message went out.
            assert [m["data"] for m in await person.take(1)] == ["still in"]
            await person.quiet()

    checks = [
        (d.resource, d.granted, d.user_id) for d in await decisions(server.hub, "team:channel")
    ]
    assert (f"agent:{outsider['agentId']} -> team:{team_id}", False, ann.user_id) in checks
    assert (f"agent:{stranger['agentId']} -> team:{team_id}", False, bob.user_id) in checks
    assert (f"agent:{ids['bea']} -> team:{team_id}", True, ann.user_id) in checks
    assert (f"agent:{ids['bea']} -> team:{team_id}", False, ann.user_id) in checks


async def closed_with(
    server: HubServer, team_id: str, token: str | None, **options: Any
) -> tuple[Any, Any]:
    async with watch_team(server, team_id, token, **options) as watcher:
        closed = await watcher.closed()
        assert watcher.received == [], watcher.received
        return closed


async def test_a_person_watches_only_the_channels_of_teams_they_see(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    agent_role = await people.join("robot@example.com", role="agent")
    admin = await people.admin()
    member = (await ann.create_agent("member")).agent_id
    response = await ann.call("POST", "/api/teams", json={"name": "ann's", "agentIds": [member]})
    assert response.status_code == 201, response.text
    team_id = response.json()["id"]

    assert await closed_with(server, team_id, bob.token) == (1008, "Access denied")
    assert await closed_with(server, "no-such-team", ann.token) == (1008, "Access denied")
    assert await closed_with(server, team_id, agent_role.token) == (1008, "Access denied")
    assert await closed_with(server, team_id, "forged") == (1008, "Authentication failed")
    assert await closed_with(server, team_id, ann.token, origin="http://elsewhere.test") == (
        1008,
        "Origin not allowed",
    )
    # The token may come as the first message instead, and the hub's own origin is welcome.
    async with watch_team(
        server, team_id, ann.token, by_message=True, origin="http://hub.test"
    ) as watcher:
        assert (await watcher.recv())["type"] == "team_status"
    for person in (ann, admin):
        async with watch_team(server, team_id, person.token) as watcher:
            opening: Watcher = watcher
            snapshot = await opening.recv()
            assert (snapshot["type"], snapshot["teamId"], snapshot["agentIds"]) == (
                "team_status",
                team_id,
                [member],
            )
            # A watcher only reads: it may not publish.
            await opening.send({"type": "team_publish", "teamId": team_id, "data": 1})
            answer = await opening.recv()
            assert answer["type"] == "error", answer
            await opening.quiet()
    # Each admission was audited.
    admitted = [
        (d.user_id, d.granted)
        for d in await decisions(server.hub, "agents:read")
        if d.resource == f"WS /ws/teams/{team_id}"
    ]
    assert (bob.user_id, True) in admitted
    assert (agent_role.user_id, False) in admitted
    assert (ann.user_id, True) in admitted


async def test_deleting_a_team_closes_its_watchers(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    admin = await people.admin()
    member = (await ann.create_agent("member")).agent_id
    response = await ann.call(
        "POST", "/api/teams", json={"name": "short-lived", "agentIds": [member]}
    )
    assert response.status_code == 201, response.text
    team_id = response.json()["id"]
    async with (
        watch_team(server, team_id, ann.token) as owner,
        watch_team(server, team_id, admin.token) as other,
    ):
        for watcher in (owner, other):
            assert (await watcher.recv())["type"] == "team_status"
        deleted = await ann.call("DELETE", f"/api/teams/{team_id}")
        assert deleted.status_code == 200, deleted.text
        for watcher in (owner, other):
            assert await watcher.closed() == (4004, "Team deleted")
    assert await closed_with(server, team_id, ann.token) == (1008, "Access denied")
