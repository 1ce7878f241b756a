"""Accounts, attacked as a hostile client would, against a real ``kai serve`` (findings 3, 8
and parts of 9 of issue 12): pre-hijacking, registration floods and policies, weak passwords,
address oracles, a disabled user's agents, two admins demoting each other on PostgreSQL, and
magic-link answers that take the same time either way."""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.agents.support import agent_socket, refused
from tests.conftest import Mailbox
from tests.helpers import PASSWORD, assert_problem, bearer
from tests.hostile.conftest import HubStarter
from tests.services import create_database, drop_database

log = logging.getLogger(__name__)
TOKEN = re.compile(r"#token=([A-Za-z0-9_-]{20,})")
VICTIM = "victim@example.com"
ATTACKERS = "the attacker's passphrase"


def link_token(mailbox: Mailbox, index: int = -1, *, to: str = VICTIM) -> str:
    mails = [m for m in mailbox.messages if m["To"] == to]
    payload = mails[index].get_payload(decode=True)
    assert isinstance(payload, bytes)
    (token,) = TOKEN.findall(payload.decode())
    return str(token)


def registration(email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return {"userData": {"email": email, "password": password, **extra}}


def credentials(email: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"credentials": {"email": email, "password": password}}


async def test_a_pre_hijacked_account_goes_back_to_its_owner(
    start_hub: HubStarter, mailbox: Mailbox
) -> None:
    hub = start_hub(registration="open", smtp_url=mailbox.url)
    async with hub.client() as attacker, hub.client() as owner:
        # The attacker registers the victim's address and keeps a session of it.
        response = await attacker.post("/api/auth/register", json=registration(VICTIM, ATTACKERS))
        assert response.status_code == 201, response.text
        held = (await attacker.post("/api/auth/login", json=credentials(VICTIM, ATTACKERS))).json()
        # The owner is told the address is taken, and signs in by magic link.
        assert_problem(await owner.post("/api/auth/register", json=registration(VICTIM)), 409)
        assert (await owner.post("/api/auth/magic-link", json={"email": VICTIM})).status_code == 202
        await mailbox.wait_for(VICTIM)
        signed_in = await owner.post("/api/auth/verify-magic", json={"token": link_token(mailbox)})
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["user"]["emailVerified"] is True

        # Everything the attacker held is dead: password, access token, refresh token.
        login = await attacker.post("/api/auth/login", json=credentials(VICTIM, ATTACKERS))
        assert_problem(login, 401, "Authentication failed")
        access = held["tokens"]["accessToken"]["token"]
        assert_problem(await attacker.get("/api/auth/session", headers=bearer(access)), 401)
        refresh = held["tokens"]["refreshToken"]["token"]
        assert_problem(
            await attacker.post("/api/auth/refresh", json={"refreshToken": refresh}), 401
        )
        # The owner's session works, and what the owner creates stays out of the attacker's hands.
        mine = bearer(signed_in.json()["tokens"]["accessToken"]["token"])
        created = await owner.post(
            "/api/agents", json={"agentData": {"name": "mine"}}, headers=mine
        )
        assert created.status_code == 201, created.text
        assert_problem(await attacker.get("/api/agents", headers=bearer(access)), 401)


async def test_a_registration_flood_is_throttled_while_others_log_in(
    start_hub: HubStarter,
) -> None:
    # The hub believes X-Forwarded-For from this machine, so one test speaks from many addresses.
    hub = start_hub(
        registration="open", auth_rate_limit="5", auth_rate_window="60", trusted_proxies="127.0.0.1"
    )
    flood = {"X-Forwarded-For": "198.51.100.7"}
    neighbour = {"X-Forwarded-For": "203.0.113.9"}
    async with hub.client() as client:
        ok = await client.post(
            "/api/auth/register", json=registration("ann@example.com"), headers=neighbour
        )
        assert ok.status_code == 201, ok.text
        baseline = await timed_logins(client, neighbour, 2)

        async def register(i: int) -> int:
            response = await client.post(
                "/api/auth/register", json=registration(f"flood{i}@example.com"), headers=flood
            )
            return response.status_code

        flooding = asyncio.gather(*(register(i) for i in range(40)))
        during = await timed_logins(client, neighbour, 2)
        statuses = await flooding
    assert statuses.count(201) <= 5, statuses
    assert statuses.count(429) >= 35, statuses
    assert set(statuses) <= {201, 429}
    # Ann logs in throughout, well within a second.
    assert max(during) < 1.0, (baseline, during)
    async with hub.client() as client:
        users = await client.get("/api/users", params={"q": "flood"}, headers=await hub.admin())
    assert users.json()["total"] == statuses.count(201)


async def timed_logins(
    client: httpx.AsyncClient, headers: dict[str, str], count: int
) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post(
            "/api/auth/login", json=credentials("ann@example.com"), headers=headers
        )
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return times


async def test_registration_policies_and_weak_passwords(start_hub: HubStarter) -> None:
    closed = start_hub(registration="closed")
    async with closed.client() as client:
        response = await client.post("/api/auth/register", json=registration("ann@example.com"))
        assert_problem(response, 403, "Registration is closed: an admin creates accounts")
    closed.stop()

    hub = start_hub(registration="invite")
    async with hub.client() as client:
        without = await client.post("/api/auth/register", json=registration("ann@example.com"))
        assert_problem(without, 403, "Registration needs an invite")
        admin = await hub.admin()
        made = await client.post("/api/invites", json={"email": "ann@example.com"}, headers=admin)
        assert made.status_code == 201, made.text
        code = made.json()["code"]
        for password, rule in [("password", "common"), ("12345678", "common"), (" " * 8, "blank")]:
            weak = await client.post(
                "/api/auth/register", json=registration("ann@example.com", password, invite=code)
            )
            assert_problem(weak, 422)
            assert weak.json()["errors"][0]["rule"] == rule
        # A refused password did not spend the invite; it works once, for its address only.
        eve = await client.post(
            "/api/auth/register", json=registration("eve@example.com", invite=code)
        )
        assert_problem(eve, 403, "Invalid or expired invite")
        ann = await client.post(
            "/api/auth/register", json=registration("ann@example.com", invite=code)
        )
        assert ann.status_code == 201, ann.text
        again = await client.post(
            "/api/auth/register", json=registration("bob@example.com", invite=code)
        )
        assert_problem(again, 403, "Invalid or expired invite")


async def test_where_addresses_are_proven_registration_is_no_oracle(
    start_hub: HubStarter, mailbox: Mailbox
) -> None:
    hub = start_hub(registration="verified", smtp_url=mailbox.url)
    async with hub.client() as client:
        first = await client.post("/api/auth/register", json=registration(VICTIM))
        assert first.status_code == 201
        taken = await client.post("/api/auth/register", json=registration(VICTIM))
        new = await client.post("/api/auth/register", json=registration("nobody@example.com"))
        assert taken.status_code == new.status_code == 201
        assert taken.json().keys() == new.json().keys()
        assert taken.json()["user"].keys() == new.json()["user"].keys()
        assert taken.json()["user"]["id"] != first.json()["user"]["id"]
        # The owner, not the prober, learns of the attempt.
        mails = await mailbox.wait_for(VICTIM, count=2)
        assert [m["Subject"] for m in mails] == ["Confirm your kai account", "Your kai account"]
        # Unproven, the account takes no password login.
        assert_problem(await client.post("/api/auth/login", json=credentials(VICTIM)), 403)


async def test_a_disabled_users_agents_are_closed_and_refused(start_hub: HubStarter) -> None:
    hub = start_hub(registration="open")
    async with hub.client() as client:
        await client.post("/api/auth/register", json=registration("ann@example.com"))
        login = (await client.post("/api/auth/login", json=credentials("ann@example.com"))).json()
        ann = bearer(login["tokens"]["accessToken"]["token"])
        created = await client.post(
            "/api/agents", json={"agentData": {"name": "anns"}}, headers=ann
        )
        assert created.status_code == 201, created.text
        token = created.json()["agentToken"]
        url = f"{hub.ws_url}/ws/agent"
        async with agent_socket(url, token) as agent:
            await agent.hello("anns")
            response = await client.put(
                f"/api/users/{login['user']['id']}",
                json={"disabled": True},
                headers=await hub.admin(),
            )
            assert response.status_code == 200, response.text
            assert await agent.closed() == (4006, "Owner disabled")
        # Reconnecting is refused before any welcome, and Ann's own session is over.
        assert await refused(url, token) == (1008, "Authentication failed")
        assert_problem(await client.get("/api/agents", headers=ann), 401)
        # Enabled again, the same token connects.
        await client.put(
            f"/api/users/{login['user']['id']}", json={"disabled": False}, headers=await hub.admin()
        )
        async with agent_socket(url, token) as agent:
            assert (await agent.hello("anns"))["type"] == "hello_ack"


@pytest.fixture
async def fresh_pg(pg_admin_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_admin_url)
    yield url
    await drop_database(pg_admin_url, url)


async def test_two_admins_demoting_each_other_on_postgresql_leave_one(
    start_hub: HubStarter, fresh_pg: str
) -> None:
    hub = start_hub(registration="open", database_url=fresh_pg, auth_rate_limit="1000")
    root = await hub.admin()
    async with hub.client() as client:
        me = (await client.get("/api/auth/session", headers=root)).json()["user"]["id"]
        for round_ in range(5):
            pair = []
            for name in ("ada", "bea"):
                email = f"{name}{round_}@example.com"
                user = (await client.post("/api/auth/register", json=registration(email))).json()
                await client.put(
                    f"/api/users/{user['user']['id']}", json={"role": "admin"}, headers=root
                )
                token = (await client.post("/api/auth/login", json=credentials(email))).json()
                pair.append((user["user"]["id"], bearer(token["tokens"]["accessToken"]["token"])))
            (ada_id, ada), (bea_id, bea) = pair
            assert (
                await client.put(f"/api/users/{me}", json={"role": "user"}, headers=ada)
            ).status_code == 200
            answers = await asyncio.gather(
                client.put(f"/api/users/{bea_id}", json={"role": "user"}, headers=ada),
                client.put(f"/api/users/{ada_id}", json={"role": "user"}, headers=bea),
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses in ([200, 403], [200, 409]), [a.text for a in answers]
            winner = ada if answers[0].status_code == 200 else bea
            admins = (
                await client.get("/api/users", params={"role": "admin"}, headers=winner)
            ).json()
            assert admins["total"] == 1, admins
            await client.put(f"/api/users/{me}", json={"role": "admin"}, headers=winner)
            hub.tokens.clear()
            root = await hub.admin()
            survivor = admins["users"][0]["id"]
            await client.put(f"/api/users/{survivor}", json={"role": "user"}, headers=root)


async def test_magic_link_answers_take_the_same_time_either_way(
    start_hub: HubStarter, mailbox: Mailbox
) -> None:
    hub = start_hub(registration="open", smtp_url=mailbox.url, auth_rate_limit="10000")
    samples: dict[str, list[float]] = {"known": [], "unknown": []}
    async with hub.client() as client:
        await client.post("/api/auth/register", json=registration("ann@example.com"))
        for i in range(60):
            pair = [("known", "ann@example.com"), ("unknown", f"nobody{i}@example.com")]
            # Each goes first half the time: whatever the one before left running in the
            # background (the known address's mail) weighs on both alike.
            for kind, email in pair if i % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                response = await client.post("/api/auth/magic-link", json={"email": email})
                samples[kind].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 202
                await asyncio.sleep(0.03)  # let the background work of one not land in the next
    known, unknown = (statistics.median(samples[k]) for k in ("known", "unknown"))
    log.warning("magic-link median: known %.2f ms, unknown %.2f ms", known, unknown)
    # Finding the account and storing a link on the request's path would cost several ms on
    # either database; 2 ms is beyond the noise of the suite's other worker on the same cores.
    assert abs(known - unknown) < max(2.0, 0.2 * unknown), (known, unknown)
    # The known address did get its mails: the work happened, off the request's path.
    await mailbox.wait_for("ann@example.com", count=60, timeout=20)
