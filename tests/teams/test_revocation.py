"""Taking a right back ends what it allowed, not only what is asked for later: an agent taken out
of a team stops hearing its channel, a revoked ``watch`` grant ends the peer's events, and a
deleted team ends its agents' subscriptions as it closes its watchers' sockets. And in the SDK,
two subscriptions to one channel both hear it, and a refused subscription is not asked for
again after a reconnect."""

from __future__ import annotations

from kai.protocol.agent import Close
from kai.sdk import Agent
from tests.agents.support import HubServer, People, eventually
from tests.realtime.client_support import watch
from tests.teams.support import (
    Crew,
    client_of,
    collecting,
    decisions,
    following,
    refused,
    register,
    watch_team,
    worker,
)


async def test_an_agent_taken_out_of_a_team_stops_hearing_its_channel(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "ada", "bea")
        team = await kai.create_team("crew", [ids["ada"], ids["bea"]])
        stays, leaves = await crew.start_all(server.ws_url, tokens, Agent("ada"), Agent("bea"))
        channel = stays.team(team["id"])
        async with (
            following(stays, team["id"]) as ada_hears,
            following(leaves, team["id"]) as bea_hears,
        ):
            await channel.publish("before")
            await bea_hears.has(1)

            await kai.update_team(team["id"], agentIds=[ids["ada"]])
            await channel.publish("after")
            await ada_hears.has(2)  # it went out
            # A refusal on Bea's socket comes after anything sent to her before it.
            await refused(leaves.team(team["id"]).publish("may I?"))
            assert [m["data"] for m in bea_hears.team_messages()] == ["before"], (
                "an agent no longer in the team still hears its channel"
            )


async def test_a_revoked_watch_grant_ends_the_peers_events(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "boss", "helper")
        boss_id, helper_id = ids["boss"], ids["helper"]
        made = await kai.grant(boss_id, ["watch"], target_agent_id=helper_id)
        agent, _ = await crew.start_all(server.ws_url, tokens, Agent("boss"), worker("helper"))
        async with (
            collecting(agent.peer("helper").events()) as boss_sees,
            watch(server, helper_id, ann.token) as person,
        ):
            await person.recv()  # the snapshot
            first = await kai.create_task(helper_id, "double", {"n": 1})
            await person.until("task_update", status="succeeded", taskId=first["taskId"])
            await boss_sees.has(4, kind="task_update", what="task updates")

            await kai.revoke(boss_id, made["id"])
            second = await kai.create_task(helper_id, "double", {"n": 2})
            await person.until("task_update", status="succeeded", taskId=second["taskId"])
            # A refusal on the boss's socket comes after anything sent to it before.
            await refused(agent.peer("helper").command("add", {"a": 1, "b": 1}))
            seen = {m["taskId"] for m in boss_sees.of_type("task_update")}
            assert seen == {first["taskId"]}, "a revoked watch grant still shows the peer's work"


async def test_a_deleted_team_ends_its_agents_subscriptions(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ada = await kai.create_agent("ada")
        team = await kai.create_team("crew", [ada["agentId"]])
        agent = await crew.start(Agent("ada"), server.ws_url, ada["agentToken"])
        async with (
            following(agent, team["id"]) as follower,
            watch_team(server, team["id"], ann.token) as person,
        ):
            await person.recv()
            await kai.delete_team(team["id"])
            assert await person.closed() == (4004, "Team deleted")  # as the agent should be told

            async def told() -> bool:
                return bool(follower.of_type("feed_closed"))

            await eventually(told, 5, what="the agent told its subscription ended")
            (closed,) = follower.of_type("feed_closed")
            assert (closed["feed"], closed["code"]) == (f"team:{team['id']}", 4004), closed


async def test_two_subscriptions_to_one_channel_in_one_agent_both_hear_it(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "ada", "bea")
        team = await kai.create_team("crew", [ids["ada"], ids["bea"]])
        agent, other = await crew.start_all(server.ws_url, tokens, Agent("ada"), Agent("bea"))
        async with (
            following(agent, team["id"]) as one,
            following(agent, team["id"]) as two,
            following(other, team["id"]) as reference,
        ):
            await agent.team(team["id"]).publish("hello")
            await reference.has(1)
            await two.has(1)
            assert [m["data"] for m in one.team_messages()] == ["hello"], (
                "a second subscription to the channel silenced the first"
            )


async def test_a_refused_subscription_is_not_asked_for_again_after_a_reconnect(
    server: HubServer, people: People, crew: Crew
) -> None:
    ann = await people.join("ann@example.com")
    async with client_of(ann) as kai:
        ids, tokens = await register(kai, "ada", "bea")
        team = await kai.create_team("crew", [ids["bea"]])
        agent = await crew.start(Agent("ada"), server.ws_url, tokens["ada"])
        refusal = await refused(anext(agent.team(team["id"]).subscribe()))
        assert refusal.error == "This agent is not a member of that team"
        # Ada joins the team later: nobody reads a subscription she was refused.
        await kai.update_team(team["id"], agentIds=[ids["ada"], ids["bea"]])

        live = server.hub.live.get(ids["ada"])
        assert live is not None
        await live.close(Close.GOING_AWAY, "Going away for the test")

        async def back() -> bool:
            now = server.hub.live.get(ids["ada"])
            return now is not None and now is not live and agent.connected.is_set()

        await eventually(back, 10, what="Ada back on the hub")
        # Handled in order on her socket: after anything the SDK sent on reconnecting.
        await agent.team(team["id"]).publish("after the reconnect")

    channel = f"agent:{ids['ada']} -> team:{team['id']}"
    asked = [
        d.granted for d in await decisions(server.hub, "team:channel") if d.resource == channel
    ]
    assert asked == [False, True], "the SDK subscribed again to a feed it was refused"
