"""The hub closing watchers' sockets: logout, refresh reuse, disabling, a role change, deletion;
in Redis mode issued on one node for sockets held by another. And a restart, seen as events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.agents.processes import Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, Person, agent_socket
from tests.helpers import PASSWORD, Api
from tests.realtime import client_support as support
from tests.realtime.client_support import Hubs, Watcher, check_sequence, refused_with, watch

# The fixtures these tests use, by name.
mode = support.mode
hubs = support.hubs
backing = support.backing
shared_redis_url = support.shared_redis_url

SESSION_ENDED = (4001, "Session ended")


async def session(server: HubServer, email: str) -> dict[str, Any]:
    """Another login of ``email``: a session of its own."""
    return await Api(server.client).login(email, PASSWORD)


def access(login: dict[str, Any]) -> str:
    return str(login["tokens"]["accessToken"]["token"])


@asynccontextmanager
async def watching(
    *sockets: tuple[HubServer, str, str],
) -> AsyncIterator[list[Watcher]]:
    """Watchers (server, agent id, token), each past its snapshot."""
    async with AsyncExitStack() as stack:
        watchers = [
            await stack.enter_async_context(watch(server, agent_id, token))
            for server, agent_id, token in sockets
        ]
        for watcher in watchers:
            assert (await watcher.recv())["snapshot"] is True
        yield watchers


async def still_open(*watchers: Watcher) -> None:
    for watcher in watchers:
        await watcher.heartbeat()


async def test_logout_closes_that_sessions_sockets_on_every_node(hubs: Hubs) -> None:
    one, two = await hubs.pair()  # kicks issued on one close sockets on two
    ann = await People(one).join("ann@example.com")
    other_session = access(await session(two, ann.email))
    created = await ann.create_agent()
    agent_id = created.agent_id

    async with watching(
        (one, agent_id, ann.token), (two, agent_id, ann.token), (two, agent_id, other_session)
    ) as (here, there, elsewhere):
        response = await ann.call("POST", "/api/auth/logout")
        assert response.status_code == 200, response.text
        assert await here.closed() == SESSION_ENDED
        assert await there.closed() == SESSION_ENDED
        await still_open(elsewhere)  # the user's other session goes on
    assert await refused_with(two, agent_id, ann.token) == (1008, "Authentication failed")


async def test_a_reused_refresh_token_ends_the_session_and_its_sockets(hubs: Hubs) -> None:
    one, two = await hubs.pair()  # kicks issued on one close sockets on two
    people = People(one)
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    login = await session(one, ann.email)
    refresh = login["tokens"]["refreshToken"]["token"]

    renewed = await one.client.post("/api/auth/refresh", json={"refreshToken": refresh})
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()["tokens"]["accessToken"]["token"]
    async with watching(
        (two, created.agent_id, access(login)),
        (two, created.agent_id, fresh),
        (one, created.agent_id, ann.token),
    ) as (old, new, unrelated):
        stolen = await one.client.post("/api/auth/refresh", json={"refreshToken": refresh})
        assert stolen.status_code == 401, stolen.text
        assert await old.closed() == SESSION_ENDED
        assert await new.closed() == SESSION_ENDED
        await still_open(unrelated)


async def test_disabling_a_user_closes_all_their_sockets(hubs: Hubs) -> None:
    one, two = await hubs.pair()  # kicks issued on one close sockets on two
    people = People(one)
    admin = await people.admin()
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    other_session = access(await session(one, ann.email))

    async with watching(
        (two, created.agent_id, ann.token),
        (one, created.agent_id, other_session),
        (two, created.agent_id, admin.token),
    ) as (first, second, admins):
        response = await admin.call("PUT", f"/api/users/{ann.user_id}", json={"disabled": True})
        assert response.status_code == 200, response.text
        assert await first.closed() == SESSION_ENDED
        assert await second.closed() == SESSION_ENDED
        await still_open(admins)


async def test_losing_agents_read_closes_the_users_sockets_with_4003(hubs: Hubs) -> None:
    one, two = await hubs.pair()  # kicks issued on one close sockets on two
    people = People(one)
    admin = await people.admin()
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    anns = await ann.create_agent()
    bobs = await bob.create_agent()

    async with watching(
        (two, anns.agent_id, ann.token),
        (one, anns.agent_id, ann.token),
        (two, bobs.agent_id, bob.token),
    ) as (first, second, others):
        # A change that keeps agents:read closes nothing.
        response = await admin.call("PUT", f"/api/users/{ann.user_id}", json={"role": "developer"})
        assert response.status_code == 200, response.text
        await still_open(first, second)
        response = await admin.call("PUT", f"/api/users/{ann.user_id}", json={"role": "agent"})
        assert response.status_code == 200, response.text
        assert await first.closed() == (4003, "Access revoked")
        assert await second.closed() == (4003, "Access revoked")
        await still_open(others)
    assert await refused_with(two, anns.agent_id, ann.token) == (1008, "Access denied")


async def test_deleting_an_agent_closes_its_watchers_with_4004(hubs: Hubs) -> None:
    one, two = await hubs.pair()  # kicks issued on one close sockets on two
    people = People(one)
    admin = await people.admin()
    ann = await people.join("ann@example.com")
    doomed = await ann.create_agent("doomed")
    kept = await ann.create_agent("kept")

    async with (
        agent_socket(one.ws_url, doomed.token) as agent,
        watching(
            (two, doomed.agent_id, ann.token),
            (one, doomed.agent_id, admin.token),
            (two, kept.agent_id, ann.token),
        ) as (owners, admins, others),
    ):
        await agent.hello()
        for watcher in (owners, admins):
            assert (await watcher.recv())["status"] == "online"
        response = await admin.call("DELETE", f"/api/agents/{doomed.agent_id}")
        assert response.status_code == 200, response.text
        assert await owners.closed() == (4004, "Agent deleted")
        assert await admins.closed() == (4004, "Agent deleted")
        await still_open(others)
    assert await refused_with(two, doomed.agent_id, ann.token) == (1008, "Access denied")


async def test_a_restart_is_seen_as_events_and_answers_once_the_agent_is_back(
    hubs: Hubs, tmp_path: Path
) -> None:
    """An SDK agent process on one node; the restart is asked, and watched, on the other."""
    one, two = await hubs.pair()
    ann = await People(one).join("ann@example.com")
    created = await ann.create_agent()
    launcher = Launcher(one.ws_url, tmp_path)
    try:
        process = launcher.start(created.token)
        await ann.wait_status(created.agent_id, "online", timeout=20, process=process)
        there = Person(two, ann.email, ann.user_id, ann.token)
        async with watch(two, created.agent_id, ann.token) as watcher:
            snapshot = await watcher.recv()
            assert snapshot["status"] == "online"
            response = await there.call(
                "POST",
                f"/api/agents/{created.agent_id}/restart",
                json={"options": {"timeout": 20, "reason": "test"}},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["success"], body["previousStatus"], body["currentStatus"]) == (
                True,
                "online",
                "online",
            )
            assert 0 < body["restartTime"] < 20
            events = await watcher.until("status_update", status="online")
        check_sequence(events, after=snapshot["seq"], epoch=snapshot["epoch"])
        statuses = [e["status"] for e in events if e["type"] == "status_update"]
        assert statuses[0] == "restarting"
        assert statuses[-1] == "online"
        assert set(statuses[:-1]) == {"restarting"}, statuses
        assert process.returncode is None, process.output()  # the same process came back
    finally:
        launcher.kill_all()


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_password_set_from_the_command_line_closes_the_users_sockets(hubs: Hubs) -> None:
    """``kai users set-password`` runs as a process of its own beside the nodes; with Redis,
    its kick reaches the sockets they hold."""
    one, two = await hubs.pair()
    people = People(one)
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    anns = await ann.create_agent()
    bobs = await bob.create_agent()

    async with watching(
        (one, anns.agent_id, ann.token),
        (two, anns.agent_id, ann.token),
        (two, bobs.agent_id, bob.token),
    ) as (first, second, others):
        done = await run_cli(
            "users",
            "set-password",
            ann.email,
            "--password",
            "a brand new password",
            env=child_env(**hubs.environment()),
        )
        assert done.returncode == 0, done.stderr
        assert await first.closed() == SESSION_ENDED
        assert await second.closed() == SESSION_ENDED
        await still_open(others)
    assert await refused_with(one, anns.agent_id, ann.token) == (1008, "Authentication failed")
