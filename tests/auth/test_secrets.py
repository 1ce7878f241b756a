"""No password, password hash or token leaks into an answer or a log line."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.auth.conftest import HubStarter
from tests.auth.support import access, magic_token, refresh, user_row
from tests.conftest import Mailbox
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer

PASSWORD = "Tr0ub4dor-and-3-secret-words"
WRONG = "a-wrong-but-secret-guess-42"
SHORT = "Sh0rt!x"
EMAIL = "ann@example.com"
# Records of the test's own SMTP server, which has to see the mail: not kai's to keep quiet.
TEST_SERVERS = ("mail.log",)


def login_body(email: str, password: str) -> dict[str, Any]:
    return {"credentials": {"email": email, "password": password}}


async def test_no_secret_in_any_answer_or_log_line(
    start: HubStarter, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # before the hub starts: its startup is covered too
    answers: list[httpx.Response] = []
    async with start() as running:
        hub = running.hub

        async def call(
            method: str, url: str, *, json: Any = None, headers: dict[str, str] | None = None
        ) -> httpx.Response:
            response = await running.client.request(method, url, json=json, headers=headers)
            answers.append(response)
            return response

        async def status(method: str, url: str, **kwargs: Any) -> int:
            return (await call(method, url, **kwargs)).status_code

        user_data = {"email": EMAIL, "password": PASSWORD, "name": "Ann"}
        assert await status("POST", "/api/auth/register", json={"userData": user_data}) == 201
        assert await status("POST", "/api/auth/register", json={"userData": user_data}) == 409
        short = {"userData": {"email": "bob@example.com", "password": SHORT}}
        assert await status("POST", "/api/auth/register", json=short) == 422
        assert await status("POST", "/api/auth/login", json=login_body(EMAIL, WRONG)) == 401

        login = await call("POST", "/api/auth/login", json=login_body(EMAIL, PASSWORD))
        assert login.status_code == 200
        first_refresh = refresh(login.json())
        rotated = await call("POST", "/api/auth/refresh", json={"refreshToken": first_refresh})
        assert rotated.status_code == 200
        second_access = access(rotated.json())
        assert await status("GET", "/api/auth/session", headers=bearer(second_access)) == 200

        assert await status("POST", "/api/auth/magic-link", json={"email": EMAIL}) == 202
        token = magic_token((await mailbox.wait_for(EMAIL))[0])
        verified = await call("POST", "/api/auth/verify-magic", json={"token": token})
        assert verified.status_code == 200
        assert await status("POST", "/api/auth/verify-magic", json={"token": token}) == 400
        # Proving the address dropped the password set before it; Ann sets hers again.
        again = {"newPassword": PASSWORD}
        magic_headers = bearer(access(verified.json()))
        assert await status("POST", "/api/auth/password", json=again, headers=magic_headers) == 200
        wrong_current = {"currentPassword": WRONG, "newPassword": PASSWORD}
        assert (
            await status("POST", "/api/auth/password", json=wrong_current, headers=magic_headers)
            == 403
        )

        # The failure paths that audit: a reused refresh token, a second logout.
        assert (
            await status("POST", "/api/auth/refresh", json={"refreshToken": first_refresh}) == 401
        )
        magic_access = access(verified.json())
        assert await status("POST", "/api/auth/logout", headers=bearer(magic_access)) == 200
        assert await status("POST", "/api/auth/logout", headers=bearer(magic_access)) == 401

        admin = await call("POST", "/api/auth/login", json=login_body(ADMIN_EMAIL, ADMIN_PASSWORD))
        users = await call("GET", "/api/users", headers=bearer(access(admin.json())))
        assert users.status_code == 200
        assert EMAIL in users.text
        await hub.audit.flush()
        await hub.outbox.drain()
        hashes = [(await user_row(hub, e)).password_hash for e in (EMAIL, ADMIN_EMAIL)]
    # Stopping the hub logs too; the capture ends here.

    assert all(h is not None and h.startswith("$argon2") for h in hashes), hashes
    # Answers: never a password or a hash, and the magic token travels only by mail.
    never_answered = [PASSWORD, WRONG, SHORT, ADMIN_PASSWORD, "$argon2", token]
    never_answered += [h for h in hashes if h]
    for response in answers:
        for secret in never_answered:
            assert secret not in response.text, (str(response.request.url), secret)
    # A token appears in the one answer that issued it, and nowhere else.
    issued: dict[str, httpx.Response] = {}
    for issuer in (login, rotated, verified, admin):
        issued |= {access(issuer.json()): issuer, refresh(issuer.json()): issuer}
    for secret, issuer in issued.items():
        holders = [r for r in answers if secret in r.text]
        assert holders == [issuer], (secret, [str(r.request.url) for r in holders])

    # Log lines, at every level: none of it.
    records = [r for r in caplog.records if not r.name.startswith(TEST_SERVERS)]
    assert records, "nothing was logged at all: the capture is broken"
    for record in records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        for secret in [*never_answered, *issued]:
            assert secret not in text, (record.name, record.levelname, secret)
