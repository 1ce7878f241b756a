"""Registration policy (open, verified, invite, closed), invites, throttling, and no address
oracle where addresses are proven."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from kai.auth.models import User
from kai.cli import _warn_if_exposed_and_open
from kai.config import Settings
from tests.auth.conftest import HubStarter, Started
from tests.auth.support import assert_user, magic_token, user_row
from tests.conftest import Mailbox
from tests.helpers import PASSWORD, Api, assert_problem, bearer

REGISTER = "/api/auth/register"


def user_data(email: str, **extra: Any) -> dict[str, Any]:
    return {"userData": {"email": email, "password": PASSWORD, **extra}}


async def invite(hub: Started, **body: Any) -> dict[str, Any]:
    admin = await Api(hub.client).admin_token()
    response = await hub.client.post("/api/invites", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def count_users(hub: Started) -> int:
    async with hub.hub.db.session(write=False) as session:
        return await session.scalar(select(func.count()).select_from(User)) or 0


def test_registration_is_open_by_default_as_the_contract_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KAI_REGISTRATION", "KAI_REQUIRE_EMAIL_VERIFICATION"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.registration == "open"
    assert settings.verification_required is False
    # The older setting still works, as the name of `verified` (and adds proof to `invite`).
    monkeypatch.setenv("KAI_REQUIRE_EMAIL_VERIFICATION", "true")
    assert Settings().verification_required is True
    monkeypatch.setenv("KAI_REGISTRATION", "verified")
    monkeypatch.delenv("KAI_REQUIRE_EMAIL_VERIFICATION")
    assert Settings().verification_required is True


async def test_a_closed_hub_refuses_every_registration(start: HubStarter) -> None:
    async with start(registration="closed") as hub:
        before = await count_users(hub)
        response = await hub.client.post(REGISTER, json=user_data("ann@example.com"))
        assert_problem(response, 403, "Registration is closed: an admin creates accounts")
        # An invite does not open it either.
        code = (await invite(hub))["code"]
        response = await hub.client.post(REGISTER, json=user_data("ann@example.com", invite=code))
        assert_problem(response, 403)
        assert await count_users(hub) == before


async def test_an_invite_registers_once(start: HubStarter) -> None:
    async with start(registration="invite") as hub:
        client = hub.client
        assert_problem(
            await client.post(REGISTER, json=user_data("ann@example.com")),
            403,
            "Registration needs an invite",
        )
        assert_problem(
            await client.post(REGISTER, json=user_data("ann@example.com", invite="x" * 43)),
            403,
            "Invalid or expired invite",
        )
        created = await invite(hub, note="for Ann")
        assert created["invite"]["state"] == "open"
        assert created["invite"]["note"] == "for Ann"
        assert "codeHash" not in created["invite"]
        ok = await client.post(REGISTER, json=user_data("ann@example.com", invite=created["code"]))
        assert ok.status_code == 201, ok.text
        assert_user(ok.json()["user"], email="ann@example.com")
        again = await client.post(
            REGISTER, json=user_data("bob@example.com", invite=created["code"])
        )
        assert_problem(again, 403, "Invalid or expired invite")
        admin = bearer(await Api(client).admin_token())
        listed = (await client.get("/api/invites", params={"all": "true"}, headers=admin)).json()
        [used] = [i for i in listed["invites"] if i["id"] == created["invite"]["id"]]
        assert used["state"] == "used"
        assert used["usedBy"] == ok.json()["user"]["id"]
        # Open invites only, by default: the used one is gone from that list.
        open_now = (await client.get("/api/invites", headers=admin)).json()
        assert created["invite"]["id"] not in [i["id"] for i in open_now["invites"]]


async def test_an_invite_for_one_address_and_a_revoked_invite_are_refused(
    start: HubStarter,
) -> None:
    async with start(registration="invite") as hub:
        client = hub.client
        for_ann = await invite(hub, email="Ann@Example.com")
        assert for_ann["invite"]["email"] == "ann@example.com"
        wrong = await client.post(
            REGISTER, json=user_data("eve@example.com", invite=for_ann["code"])
        )
        assert_problem(wrong, 403, "Invalid or expired invite")
        # Refused for Eve, it still works for Ann.
        right = await client.post(
            REGISTER, json=user_data("ann@example.com", invite=for_ann["code"])
        )
        assert right.status_code == 201, right.text

        revoked = await invite(hub)
        admin = bearer(await Api(client).admin_token())
        response = await client.delete(f"/api/invites/{revoked['invite']['id']}", headers=admin)
        assert response.status_code == 200, response.text
        assert response.json()["invite"]["state"] == "revoked"
        late = await client.post(
            REGISTER, json=user_data("bob@example.com", invite=revoked["code"])
        )
        assert_problem(late, 403, "Invalid or expired invite")
        missing = await client.delete("/api/invites/no-such-invite", headers=admin)
        assert_problem(missing, 404)


async def test_invites_are_for_admins_and_audited(start: HubStarter) -> None:
    async with start(registration="open") as hub:
        api = Api(hub.client)
        user = bearer(await api.user_token("ann@example.com"))
        assert_problem(await hub.client.post("/api/invites", json={}, headers=user), 403)
        assert_problem(await hub.client.get("/api/invites", headers=user), 403)
        created = await invite(hub)
        admin = bearer(await api.admin_token())
        await hub.client.delete(f"/api/invites/{created['invite']['id']}", headers=admin)
        await hub.hub.audit.flush()
        events = (
            await hub.client.get("/api/audit", params={"kind": "auth"}, headers=admin)
        ).json()["events"]
        kinds = {(e["permission"], e["resource"]) for e in events}
        assert ("auth:invite_created", f"invite:{created['invite']['id']}") in kinds
        assert ("auth:invite_revoked", f"invite:{created['invite']['id']}") in kinds


async def test_an_open_hub_says_an_address_is_taken(start: HubStarter) -> None:
    async with start(registration="open") as hub:
        await Api(hub.client).register("ann@example.com")
        response = await hub.client.post(REGISTER, json=user_data("ann@example.com"))
        assert_problem(response, 409)


async def test_where_addresses_are_proven_a_taken_one_answers_as_a_new_one(
    start: HubStarter, mailbox: Mailbox
) -> None:
    async with start(registration="verified") as hub:
        client = hub.client
        first = await client.post(REGISTER, json=user_data("ann@example.com", name="Ann"))
        fresh = await client.post(REGISTER, json=user_data("bob@example.com", name="Ann"))
        taken = await client.post(REGISTER, json=user_data("ann@example.com", name="Ann"))
        assert first.status_code == fresh.status_code == taken.status_code == 201
        shape = {k for k in fresh.json() if k != "user"}
        assert shape == {k for k in taken.json() if k != "user"}
        assert taken.json()["requiresVerification"] is True
        assert_user(taken.json()["user"], email="ann@example.com")
        assert taken.json()["user"]["name"] == "Ann"
        # The account is the first one; the answer named a user that was never stored.
        assert (await user_row(hub.hub, "ann@example.com")).id == first.json()["user"]["id"]
        assert taken.json()["user"]["id"] != first.json()["user"]["id"]
        assert await count_users(hub) == 3  # admin, Ann, Bob
        # The owner hears of it by mail, with a sign-in link that voids the confirmation.
        confirm, notice = await mailbox.wait_for("ann@example.com", count=2)
        assert confirm["Subject"] == "Confirm your kai account"
        assert notice["Subject"] == "Your kai account"
        assert "has one already" in notice.get_payload()
        stale = await client.post("/api/auth/verify-magic", json={"token": magic_token(confirm)})
        assert_problem(stale, 400)
        used = await client.post("/api/auth/verify-magic", json={"token": magic_token(notice)})
        assert used.status_code == 200, used.text


async def test_registration_is_throttled_per_address_and_per_account(start: HubStarter) -> None:
    async with start(registration="open", auth_rate_limit=3, auth_rate_window=60) as hub:
        async with hub.connect(("198.51.100.7", 1000)) as flood:
            for i in range(3):
                ok = await flood.post(REGISTER, json=user_data(f"u{i}@example.com"))
                assert ok.status_code == 201, ok.text
            refused = await flood.post(REGISTER, json=user_data("u3@example.com"))
            assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
        # Refused before any work: no account, and other addresses still register and log in.
        async with hub.connect(("198.51.100.8", 1000)) as other:
            assert (await other.post(REGISTER, json=user_data("u3@example.com"))).status_code == 201
            login = {"credentials": {"email": "u0@example.com", "password": PASSWORD}}
            assert (await other.post("/api/auth/login", json=login)).status_code == 200
        # One address tried from many client addresses is throttled too.
        for i in range(4):
            async with hub.connect((f"203.0.113.{i}", 1000)) as client:
                response = await client.post(REGISTER, json=user_data("same@example.com"))
        assert_problem(response, 429)


async def test_register_lists_the_new_answers_in_the_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    register = schema["paths"]["/api/auth/register"]["post"]["responses"]
    assert {"201", "403", "409", "422", "429"} <= set(register)
    for path, method in [
        ("/api/auth/password", "post"),
        ("/api/auth/sessions", "get"),
        ("/api/auth/sessions/{sessionId}", "delete"),
        ("/api/invites", "post"),
        ("/api/invites", "get"),
        ("/api/invites/{inviteId}", "delete"),
    ]:
        assert "401" in schema["paths"][path][method]["responses"], (path, method)


@pytest.mark.parametrize(
    ("host", "registration", "warned"),
    [
        ("0.0.0.0", "open", True),
        ("192.0.2.7", "open", True),
        ("hub.example.com", "open", True),
        ("127.0.0.1", "open", False),
        ("::1", "open", False),
        ("localhost", "open", False),
        ("0.0.0.0", "invite", False),
    ],
)
def test_serve_warns_when_anyone_who_reaches_it_may_register(
    host: str, registration: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(host=host, registration=registration)
    with caplog.at_level(logging.WARNING, logger="kai"):
        _warn_if_exposed_and_open(settings)
    messages = [r.getMessage() for r in caplog.records if r.name == "kai"]
    assert bool(messages) is warned, messages
    if warned:
        assert f"registration is open on {host}" in messages[0]
