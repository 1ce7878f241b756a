"""The contract's auth routes: the exact success shapes and every failure code."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from kai.container import Container as Hub
from tests.auth.support import (
    SESSION_KEYS,
    USER_PERMISSIONS,
    access,
    assert_tokens,
    assert_user,
    claims_of,
    magic_token,
    refresh,
    utc_time,
)
from tests.conftest import Mailbox
from tests.helpers import PASSWORD, Api, assert_problem, bearer, same_problem

LOGIN = "/api/auth/login"
REGISTER = "/api/auth/register"


def credentials(email: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"credentials": {"email": email, "password": password}}


# -- register ----------------------------------------------------------------------------------


async def test_register_answers_the_contract_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        json={"userData": {"email": "ann@example.com", "password": PASSWORD, "name": "Ann"}},
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"success", "user", "requiresVerification", "message"}
    assert body["success"] is True
    assert body["requiresVerification"] is False
    assert body["message"] == "Registration successful"
    assert_user(body["user"], email="ann@example.com")
    assert body["user"]["name"] == "Ann"
    created = utc_time(body["user"]["createdAt"])
    assert datetime.now(UTC) - created < timedelta(minutes=1)


async def test_register_without_a_name_and_with_mixed_case_email(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        REGISTER, json={"userData": {"email": "Bob@Example.COM", "password": PASSWORD}}
    )
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    assert_user(user, email="bob@example.com")
    assert user["name"] is None


async def test_register_does_not_mail_when_verification_is_off(
    client: httpx.AsyncClient, hub: Hub, mailbox: Mailbox
) -> None:
    response = await client.post(
        REGISTER, json={"userData": {"email": "quiet@example.com", "password": PASSWORD}}
    )
    assert response.status_code == 201
    await hub.outbox.drain()
    assert mailbox.messages == []


async def test_register_refuses_a_taken_email_in_any_case(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    for email in ("ann@example.com", "ANN@example.com", " Ann@Example.com"):
        response = await client.post(
            REGISTER, json={"userData": {"email": email, "password": "another password"}}
        )
        assert_problem(response, 409, "Email already registered")
    # The first account is untouched: its own password still works, the other one does not.
    assert (await client.post(LOGIN, json=credentials("ann@example.com"))).status_code == 200
    wrong = await client.post(LOGIN, json=credentials("ann@example.com", "another password"))
    assert wrong.status_code == 401


async def test_concurrent_registrations_of_one_email_make_one_account(
    client: httpx.AsyncClient,
) -> None:
    body = {"userData": {"email": "race@example.com", "password": PASSWORD}}
    answers = await asyncio.gather(*(client.post(REGISTER, json=body) for _ in range(10)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] + [409] * 9, [r.text for r in answers]
    for response in answers:
        if response.status_code == 409:
            assert_problem(response, 409, "Email already registered")


async def test_register_refuses_a_short_password(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER, json={"userData": {"email": "ann@example.com", "password": "seven77"}}
    )
    assert_problem(response, 422)
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["userData.password"]
    assert "seven77" not in response.text
    # Eight characters is enough, and nothing was created by the refusal.
    ok = await client.post(
        REGISTER, json={"userData": {"email": "ann@example.com", "password": "eight888"}}
    )
    assert ok.status_code == 201, ok.text


async def test_register_refuses_an_overlong_password(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER, json={"userData": {"email": "ann@example.com", "password": "p" * 1025}}
    )
    assert_problem(response, 422)
    assert [e["field"] for e in response.json()["errors"]] == ["userData.password"]


async def test_passwords_keep_their_spaces(client: httpx.AsyncClient) -> None:
    spaced = "  spaced out password  "
    response = await client.post(
        REGISTER, json={"userData": {"email": " ann@example.com ", "password": spaced}}
    )
    assert response.status_code == 201, response.text
    assert (
        await client.post(LOGIN, json=credentials("ann@example.com", spaced))
    ).status_code == 200
    stripped = await client.post(LOGIN, json=credentials("ann@example.com", spaced.strip()))
    assert_problem(stripped, 401, "Authentication failed")


async def test_register_refuses_bad_emails(client: httpx.AsyncClient) -> None:
    for email in ("not-an-email", "ann@", "@example.com", "ann example@example.com", ""):
        response = await client.post(
            REGISTER, json={"userData": {"email": email, "password": PASSWORD}}
        )
        assert_problem(response, 422)
        assert [e["field"] for e in response.json()["errors"]] == ["userData.email"], email


async def test_register_refuses_malformed_bodies(client: httpx.AsyncClient) -> None:
    missing = await client.post(REGISTER, json={"email": "ann@example.com", "password": PASSWORD})
    assert_problem(missing, 422)
    assert "userData" in {e["field"] for e in missing.json()["errors"]}
    extra = await client.post(
        REGISTER,
        json={"userData": {"email": "ann@example.com", "password": PASSWORD, "role": "admin"}},
    )
    assert_problem(extra, 422)
    assert [e["field"] for e in extra.json()["errors"]] == ["userData.role"]
    broken = await client.post(
        REGISTER, content=b'{"userData": ', headers={"content-type": "application/json"}
    )
    assert_problem(broken, 400)


async def test_registered_users_always_get_the_user_role(
    client: httpx.AsyncClient, api: Api
) -> None:
    await api.register("ann@example.com")
    body = await api.login("ann@example.com")
    assert body["user"]["role"] == "user"
    session = await client.get("/api/auth/session", headers=bearer(access(body)))
    assert session.json()["permissions"] == USER_PERMISSIONS


# -- login -------------------------------------------------------------------------------------


async def test_login_answers_the_contract_shape(api: Api, client: httpx.AsyncClient) -> None:
    registered = await api.register("ann@example.com", name="Ann")
    response = await client.post(LOGIN, json=credentials("ann@example.com"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "user", "tokens", "session", "expiresAt"}
    assert body["success"] is True
    assert body["user"] == registered["user"]
    assert_tokens(body["tokens"])
    assert isinstance(body["session"], str)
    assert body["session"]
    assert body["expiresAt"] == body["tokens"]["accessToken"]["expiresAt"]
    claims = claims_of(access(body))
    assert claims["sub"] == body["user"]["id"]
    assert claims["sid"] == body["session"]
    # ``expiresAt`` is when the access token really stops working.
    assert claims["exp"] == utc_time(body["expiresAt"]).timestamp()
    # Every login is a session of its own.
    again = await api.login("ann@example.com")
    assert again["session"] != body["session"]
    assert access(again) != access(body)
    assert refresh(again) != refresh(body)


async def test_login_takes_the_email_in_any_case(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    response = await client.post(LOGIN, json=credentials("ANN@Example.com"))
    assert response.status_code == 200, response.text
    assert response.json()["user"]["email"] == "ann@example.com"


async def test_login_failure_reveals_nothing_about_the_account(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    wrong_password = await client.post(LOGIN, json=credentials("ann@example.com", "not it at all"))
    unknown_email = await client.post(LOGIN, json=credentials("nobody@example.com"))
    for response in (wrong_password, unknown_email):
        assert_problem(response, 401, "Authentication failed")
        assert response.headers["www-authenticate"] == "Bearer"
    assert wrong_password.status_code == unknown_email.status_code
    assert same_problem(wrong_password, unknown_email)
    # Byte for byte the same size, too: only the request ids differ, and they are as long.
    assert len(wrong_password.content) == len(unknown_email.content)
    assert wrong_password.headers["content-type"] == unknown_email.headers["content-type"]


async def test_login_refuses_malformed_credentials(client: httpx.AsyncClient) -> None:
    for body in (
        {"credentials": {"email": "ann@example.com"}},
        {"credentials": {"email": "ann@example.com", "password": ""}},
        {"credentials": {"email": "nope", "password": PASSWORD}},
        {"email": "ann@example.com", "password": PASSWORD},
    ):
        assert_problem(await client.post(LOGIN, json=body), 422)


# -- session -----------------------------------------------------------------------------------


async def test_session_answers_the_contract_shape(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    response = await client.get("/api/auth/session", headers=bearer(access(login)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"valid", "session", "user", "permissions", "expiresAt"}
    assert body["valid"] is True
    assert set(body["session"]) == SESSION_KEYS
    assert body["session"]["id"] == login["session"]
    created = utc_time(body["session"]["createdAt"])
    expires = utc_time(body["session"]["expiresAt"])
    assert created < expires
    assert body["expiresAt"] == body["session"]["expiresAt"]
    # The session outlives its access token; the refresh token cannot outlive the session.
    assert utc_time(login["tokens"]["accessToken"]["expiresAt"]) <= expires
    assert utc_time(login["tokens"]["refreshToken"]["expiresAt"]) <= expires
    assert body["user"] == login["user"]
    assert body["permissions"] == USER_PERMISSIONS


async def test_session_without_a_valid_token_is_refused(client: httpx.AsyncClient) -> None:
    for headers in ({}, bearer("nonsense"), {"Authorization": "Bearer"}, {"Authorization": ""}):
        response = await client.get("/api/auth/session", headers=headers)
        assert_problem(response, 401, "Invalid or expired session")


# -- magic links -------------------------------------------------------------------------------


async def test_magic_link_and_verify_answer_the_contract_shape(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    response = await client.post("/api/auth/magic-link", json={"email": "ann@example.com"})
    assert response.status_code == 202, response.text
    assert response.json()["success"] is True
    [mail] = await mailbox.wait_for("ann@example.com")
    verify = await client.post("/api/auth/verify-magic", json={"token": magic_token(mail)})
    assert verify.status_code == 200, verify.text
    body = verify.json()
    assert set(body) == {"success", "user", "tokens", "session"}
    assert body["success"] is True
    assert_user(body["user"], email="ann@example.com", verified=True)
    assert_tokens(body["tokens"])
    assert isinstance(body["session"], str)
    assert claims_of(access(body))["sid"] == body["session"]
    session = await client.get("/api/auth/session", headers=bearer(access(body)))
    assert session.status_code == 200
    assert session.json()["session"]["id"] == body["session"]


async def test_verify_magic_refuses_unknown_tokens(client: httpx.AsyncClient) -> None:
    for token in ("no-such-token", "x" * 43):
        response = await client.post("/api/auth/verify-magic", json={"token": token})
        assert_problem(response, 400, "Invalid or expired magic link")
    assert_problem(await client.post("/api/auth/verify-magic", json={"token": ""}), 422)
    assert_problem(await client.post("/api/auth/verify-magic", json={}), 422)


async def test_magic_link_refuses_a_bad_email(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/magic-link", json={"email": "not-an-email"})
    assert_problem(response, 422)
    assert [e["field"] for e in response.json()["errors"]] == ["email"]


# -- refresh -----------------------------------------------------------------------------------


async def test_refresh_answers_the_contract_shape(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    response = await client.post("/api/auth/refresh", json={"refreshToken": refresh(login)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "tokens", "session", "expiresAt"}
    assert body["success"] is True
    assert_tokens(body["tokens"])
    assert body["session"] == login["session"]
    assert body["expiresAt"] == body["tokens"]["accessToken"]["expiresAt"]
    assert refresh(body) != refresh(login)
    assert access(body) != access(login)
    assert claims_of(access(body))["sid"] == login["session"]
    session = await client.get("/api/auth/session", headers=bearer(access(body)))
    assert session.status_code == 200
    assert session.json()["session"]["id"] == login["session"]


async def test_refresh_refuses_what_is_not_a_refresh_token(
    api: Api, client: httpx.AsyncClient
) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    for token in ("no-such-token", access(login), refresh(login) + "x", refresh(login)[:-1]):
        response = await client.post("/api/auth/refresh", json={"refreshToken": token})
        assert_problem(response, 401)
    assert_problem(await client.post("/api/auth/refresh", json={"refreshToken": ""}), 422)
    assert_problem(await client.post("/api/auth/refresh", json={}), 422)
    # None of those attempts touched the real token or its session.
    ok = await client.post("/api/auth/refresh", json={"refreshToken": refresh(login)})
    assert ok.status_code == 200, ok.text


# -- logout ------------------------------------------------------------------------------------


async def test_logout_answers_the_contract_shape(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    response = await client.post("/api/auth/logout", headers=bearer(access(login)))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "message": "Logout successful"}


async def test_logout_needs_a_valid_access_token(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("ann@example.com")
    login = await api.login("ann@example.com")
    for headers in ({}, bearer("nonsense"), bearer(refresh(login))):
        response = await client.post("/api/auth/logout", headers=headers)
        assert_problem(response, 401, "Invalid or expired session")
    # The failed attempts ended nothing.
    assert (await client.get("/api/auth/session", headers=bearer(access(login)))).status_code == 200
    first = await client.post("/api/auth/logout", headers=bearer(access(login)))
    assert first.status_code == 200
    second = await client.post("/api/auth/logout", headers=bearer(access(login)))
    assert_problem(second, 401, "Invalid or expired session")
