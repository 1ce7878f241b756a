"""Magic links through a real SMTP server: delivery, single use, expiry, and verification."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import update

from kai.auth.models import MagicLink
from kai.container import Container as Hub
from kai.db import utcnow
from tests.auth.conftest import HubStarter
from tests.auth.support import (
    access,
    assert_user,
    magic_token,
    mail_text,
    session_status,
    user_row,
)
from tests.clock import FakeClock
from tests.conftest import Mailbox
from tests.helpers import PASSWORD, Api, assert_problem, bearer

MAGIC_LINK = "/api/auth/magic-link"
VERIFY = "/api/auth/verify-magic"
INVALID = "Invalid or expired magic link"


async def request_link(client: httpx.AsyncClient, email: str) -> httpx.Response:
    response = await client.post(MAGIC_LINK, json={"email": email})
    assert response.status_code == 202, response.text
    return response


async def test_a_magic_link_signs_in_and_verifies_the_email(
    api: Api, client: httpx.AsyncClient, hub: Hub, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    assert (await user_row(hub, "ann@example.com")).email_verified is False
    await request_link(client, "ANN@example.com")
    [mail] = await mailbox.wait_for("ann@example.com")
    assert mail["Subject"] == "Your kai sign-in link"
    text = mail_text(mail)
    token = magic_token(mail)
    assert f'{{"token": "{token}"}}' in text  # the program-friendly form names the same token

    response = await client.post(VERIFY, json={"token": token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_user(body["user"], email="ann@example.com", verified=True)
    assert await session_status(client, access(body)) == 200
    assert (await user_row(hub, "ann@example.com")).email_verified is True
    # The password was set before anyone proved the address: it may not be the owner's, so it
    # is gone (see test_pre_hijack.py). The owner sets one of their own, then logs in with it.
    assert (await user_row(hub, "ann@example.com")).password_hash is None
    assert_problem(
        await client.post(
            "/api/auth/login",
            json={"credentials": {"email": "ann@example.com", "password": PASSWORD}},
        ),
        401,
    )
    response = await client.post(
        "/api/auth/password",
        json={"newPassword": "ann's own passphrase"},
        headers=bearer(access(body)),
    )
    assert response.status_code == 200, response.text
    login = await api.login("ann@example.com", "ann's own passphrase")
    assert login["user"]["emailVerified"] is True


async def test_a_magic_link_works_once(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await request_link(client, "ann@example.com")
    token = magic_token((await mailbox.wait_for("ann@example.com"))[0])
    first = await client.post(VERIFY, json={"token": token})
    assert first.status_code == 200, first.text
    again = await client.post(VERIFY, json={"token": token})
    assert_problem(again, 400, INVALID)
    # The session the first use opened is not harmed by the second attempt.
    assert await session_status(client, access(first.json())) == 200


async def test_an_expired_magic_link_is_refused(
    api: Api, client: httpx.AsyncClient, hub: Hub, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await request_link(client, "ann@example.com")
    token = magic_token((await mailbox.wait_for("ann@example.com"))[0])
    async with hub.db.session() as session:
        await session.execute(update(MagicLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_problem(await client.post(VERIFY, json={"token": token}), 400, INVALID)
    assert (await user_row(hub, "ann@example.com")).email_verified is False


async def test_a_magic_link_expires_after_its_ttl(start: HubStarter, mailbox: Mailbox) -> None:
    clock = FakeClock()
    async with start(clock=clock, magic_link_ttl=1) as hub:
        await Api(hub.client).register("ann@example.com")
        await request_link(hub.client, "ann@example.com")
        token = magic_token((await mailbox.wait_for("ann@example.com"))[0])
        clock.advance(1.1)
        response = await hub.client.post(VERIFY, json={"token": token})
        assert_problem(response, 400, INVALID)


async def test_a_newer_magic_link_voids_the_older(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await request_link(client, "ann@example.com")
    older = magic_token((await mailbox.wait_for("ann@example.com"))[0])
    await request_link(client, "ann@example.com")
    mails = await mailbox.wait_for("ann@example.com", count=2)
    newer = next(t for t in map(magic_token, mails) if t != older)
    assert_problem(await client.post(VERIFY, json={"token": older}), 400, INVALID)
    assert (await client.post(VERIFY, json={"token": newer})).status_code == 200


async def test_concurrent_redemptions_of_one_link_open_one_session(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await request_link(client, "ann@example.com")
    token = magic_token((await mailbox.wait_for("ann@example.com"))[0])
    answers = await asyncio.gather(*(client.post(VERIFY, json={"token": token}) for _ in range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [400] * 19, [r.text for r in answers if r.status_code not in (200, 400)]
    for response in answers:
        if response.status_code == 400:
            assert_problem(response, 400, INVALID)
        else:
            assert await session_status(client, access(response.json())) == 200


async def test_unknown_and_disabled_addresses_get_the_same_answer_and_no_mail(
    api: Api, client: httpx.AsyncClient, hub: Hub, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await api.register("off@example.com")
    off = await user_row(hub, "off@example.com")
    admin = await api.admin_token()
    response = await client.put(
        f"/api/users/{off.id}", json={"disabled": True}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text

    known = await request_link(client, "ann@example.com")
    unknown = await request_link(client, "nobody@example.com")
    disabled = await request_link(client, "off@example.com")
    assert known.json() == unknown.json() == disabled.json()
    assert known.content == unknown.content == disabled.content
    await mailbox.wait_for("ann@example.com")
    await hub.outbox.drain()
    assert [m["To"] for m in mailbox.messages] == ["ann@example.com"]


async def test_a_link_of_a_user_disabled_since_is_refused(
    api: Api, client: httpx.AsyncClient, hub: Hub, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await request_link(client, "ann@example.com")
    token = magic_token((await mailbox.wait_for("ann@example.com"))[0])
    user = await user_row(hub, "ann@example.com")
    admin = await api.admin_token()
    response = await client.put(
        f"/api/users/{user.id}", json={"disabled": True}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    assert_problem(await client.post(VERIFY, json={"token": token}), 400, INVALID)


async def test_required_verification_gates_password_login(
    start: HubStarter, mailbox: Mailbox
) -> None:
    async with start(require_email_verification=True) as hub:
        client = hub.client
        response = await client.post(
            "/api/auth/register",
            json={"userData": {"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["requiresVerification"] is True
        assert_user(body["user"], email="ann@example.com", verified=False)

        [mail] = await mailbox.wait_for("ann@example.com")
        assert mail["Subject"] == "Confirm your kai account"
        token = magic_token(mail)

        credentials = {"credentials": {"email": "ann@example.com", "password": PASSWORD}}
        refused = await client.post("/api/auth/login", json=credentials)
        assert_problem(refused, 403)
        assert "tokens" not in refused.json()
        # A wrong password is still a plain 401: the 403 needs the right one.
        wrong = {"credentials": {"email": "ann@example.com", "password": "not the password"}}
        assert_problem(await client.post("/api/auth/login", json=wrong), 401)

        verified = await client.post(VERIFY, json={"token": token})
        assert verified.status_code == 200, verified.text
        assert_user(verified.json()["user"], email="ann@example.com", verified=True)
        assert await session_status(client, access(verified.json())) == 200

        login = await client.post("/api/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        assert login.json()["user"]["emailVerified"] is True
        # The confirmation link was single-use like any other.
        assert_problem(await client.post(VERIFY, json={"token": token}), 400, INVALID)


async def test_an_unverified_user_can_ask_for_a_new_link(
    start: HubStarter, mailbox: Mailbox
) -> None:
    async with start(require_email_verification=True) as hub:
        await Api(hub.client).register("ann@example.com")
        [confirm] = await mailbox.wait_for("ann@example.com")
        await request_link(hub.client, "ann@example.com")
        mails = await mailbox.wait_for("ann@example.com", count=2)
        fresh = next(m for m in mails if m is not confirm)
        # The new link voids the confirmation link, and does the same job.
        old = await hub.client.post(VERIFY, json={"token": magic_token(confirm)})
        assert_problem(old, 400, INVALID)
        response = await hub.client.post(VERIFY, json={"token": magic_token(fresh)})
        assert response.status_code == 200, response.text
        assert response.json()["user"]["emailVerified"] is True
