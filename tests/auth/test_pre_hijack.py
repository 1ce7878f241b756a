"""Account pre-hijacking: a password set before anyone proved the address does not outlive the
proof, and neither do the sessions opened with it. And the last admin stays, however many
admins demote each other at once."""

from __future__ import annotations

import asyncio

import httpx

from tests.auth.conftest import HubStarter
from tests.auth.support import access, magic_token, refresh, session_status, user_row
from tests.conftest import Mailbox
from tests.helpers import ADMIN_EMAIL, PASSWORD, Api, assert_problem, bearer

VICTIM = "victim@example.com"
ATTACKERS = "attacker's own password"


def credentials(password: str) -> dict[str, object]:
    return {"credentials": {"email": VICTIM, "password": password}}


async def test_proving_the_address_ends_the_attackers_password_and_sessions(
    start: HubStarter, mailbox: Mailbox
) -> None:
    async with start(registration="open") as hub:
        client = hub.client
        # The attacker registers the victim's address first and keeps a session.
        await Api(client).register(VICTIM, ATTACKERS)
        held = await Api(client).login(VICTIM, ATTACKERS)
        # The owner cannot register (409), so signs in by magic link.
        taken = await client.post(
            "/api/auth/register", json={"userData": {"email": VICTIM, "password": PASSWORD}}
        )
        assert_problem(taken, 409)
        await client.post("/api/auth/magic-link", json={"email": VICTIM})
        token = magic_token((await mailbox.wait_for(VICTIM))[0])
        owner = await client.post("/api/auth/verify-magic", json={"token": token})
        assert owner.status_code == 200, owner.text
        assert owner.json()["user"]["emailVerified"] is True

        # The attacker's password, access token and refresh token are all dead.
        assert_problem(await client.post("/api/auth/login", json=credentials(ATTACKERS)), 401)
        assert await session_status(client, access(held)) == 401
        stolen = await client.post("/api/auth/refresh", json={"refreshToken": refresh(held)})
        assert_problem(stolen, 401)
        assert (await user_row(hub.hub, VICTIM)).password_hash is None
        # The owner's session is the one that lives, and the owner sets a password.
        assert await session_status(client, access(owner.json())) == 200
        mine = await client.post(
            "/api/auth/password",
            json={"newPassword": PASSWORD},
            headers=bearer(access(owner.json())),
        )
        assert mine.status_code == 200, mine.text
        assert (await client.post("/api/auth/login", json=credentials(PASSWORD))).status_code == 200
        assert_problem(await client.post("/api/auth/login", json=credentials(ATTACKERS)), 401)


async def test_a_verified_account_keeps_its_password_on_a_magic_link(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register(VICTIM, PASSWORD)
    await client.post("/api/auth/magic-link", json={"email": VICTIM})
    first = magic_token((await mailbox.wait_for(VICTIM))[0])
    proven = await client.post("/api/auth/verify-magic", json={"token": first})
    assert proven.status_code == 200, proven.text
    # The proven owner sets a password of their own...
    mine = await client.post(
        "/api/auth/password", json={"newPassword": PASSWORD}, headers=bearer(access(proven.json()))
    )
    assert mine.status_code == 200, mine.text
    kept = await api.login(VICTIM, PASSWORD)
    await client.post("/api/auth/magic-link", json={"email": VICTIM})
    second = magic_token((await mailbox.wait_for(VICTIM, count=2))[1])
    assert (await client.post("/api/auth/verify-magic", json={"token": second})).status_code == 200
    # ...and an address proven again changes nothing: the password and the sessions stay.
    assert (await api.login(VICTIM, PASSWORD))["user"]["emailVerified"] is True
    assert await session_status(client, access(kept)) == 200
    assert await session_status(client, access(proven.json())) == 200


async def test_under_verified_the_owners_registration_voids_the_attackers_confirmation(
    start: HubStarter, mailbox: Mailbox
) -> None:
    async with start(registration="verified") as hub:
        client = hub.client
        await Api(client).register(VICTIM, ATTACKERS)
        # The attacker cannot use the account before the address is proven.
        assert_problem(await client.post("/api/auth/login", json=credentials(ATTACKERS)), 403)
        await Api(client).register(VICTIM, PASSWORD)  # 201, as for a new address
        confirm, notice = await mailbox.wait_for(VICTIM, count=2)
        # The confirmation of the attacker's registration is void; the owner's link works and
        # the attacker's password is gone with it.
        stale = await client.post("/api/auth/verify-magic", json={"token": magic_token(confirm)})
        assert_problem(stale, 400)
        owner = await client.post("/api/auth/verify-magic", json={"token": magic_token(notice)})
        assert owner.status_code == 200, owner.text
        assert_problem(await client.post("/api/auth/login", json=credentials(ATTACKERS)), 401)


async def test_two_admins_demoting_each_other_leave_one_admin(
    api: Api, client: httpx.AsyncClient
) -> None:
    root = bearer(await api.admin_token())
    for round_ in range(4):
        tokens = {}
        for name in ("ada", "bea"):
            email = f"{name}{round_}@example.com"
            user_id = (await api.register(email))["user"]["id"]
            response = await client.put(
                f"/api/users/{user_id}", json={"role": "admin"}, headers=root
            )
            assert response.status_code == 200, response.text
            tokens[name] = (user_id, await api.login(email))
        # The first admin steps down, so that Ada and Bea are the only admins.
        me = (await client.get("/api/auth/session", headers=root)).json()["user"]["id"]
        ada_token = bearer(access(tokens["ada"][1]))
        step_down = await client.put(f"/api/users/{me}", json={"role": "user"}, headers=ada_token)
        assert step_down.status_code == 200, step_down.text

        ada, bea = await asyncio.gather(
            client.put(f"/api/users/{tokens['bea'][0]}", json={"role": "user"}, headers=ada_token),
            client.put(
                f"/api/users/{tokens['ada'][0]}",
                json={"role": "user"},
                headers=bearer(access(tokens["bea"][1])),
            ),
        )
        statuses = sorted([ada.status_code, bea.status_code])
        # One wins; the other is refused, as the last admin (409) or as no admin any more (403).
        assert statuses in ([200, 403], [200, 409]), (ada.text, bea.text)
        winner = ada_token if ada.status_code == 200 else bearer(access(tokens["bea"][1]))
        admins = (await client.get("/api/users", params={"role": "admin"}, headers=winner)).json()
        assert admins["total"] == 1, admins
        # Hand the hub back to the first admin for the next round.
        response = await client.put(f"/api/users/{me}", json={"role": "admin"}, headers=winner)
        assert response.status_code == 200, response.text
        root = bearer(await api.admin_token())
        assert await user_row_role(client, root, ADMIN_EMAIL) == "admin"
        survivor = admins["users"][0]["id"]
        response = await client.put(f"/api/users/{survivor}", json={"role": "user"}, headers=root)
        assert response.status_code == 200, response.text


async def user_row_role(client: httpx.AsyncClient, headers: dict[str, str], email: str) -> str:
    users = (await client.get("/api/users", params={"q": email}, headers=headers)).json()
    return str(users["users"][0]["role"])
