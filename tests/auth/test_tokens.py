"""Forged, expired and misdirected access tokens: every one is refused with the same 401."""

from __future__ import annotations

import base64
import time

import httpx

from tests.auth.support import (
    access,
    claims_of,
    forge,
    fresh_claims,
    magic_token,
    refresh,
)
from tests.conftest import Mailbox
from tests.helpers import Api, assert_problem, bearer

SESSION = "/api/auth/session"
OTHER_KEY = "some-other-signing-key-0123456789-ABCDEFGHIJKLMNOP"


async def assert_refused(client: httpx.AsyncClient, headers: dict[str, str], case: str) -> None:
    response = await client.get(SESSION, headers=headers)
    assert response.status_code == 401, f"{case}: {response.status_code} {response.text}"
    assert_problem(response, 401, "Invalid or expired session")
    assert response.headers["www-authenticate"] == "Bearer", case


async def test_forged_and_misdirected_tokens_are_refused(
    api: Api, client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    await api.register("ann@example.com")
    await api.register("bob@example.com")
    ann = await api.login("ann@example.com")
    bob = await api.login("bob@example.com")
    ended = await api.login("ann@example.com")
    assert (await client.post("/api/auth/logout", headers=bearer(access(ended)))).status_code == 200
    await client.post("/api/auth/magic-link", json={"email": "ann@example.com"})
    [mail] = await mailbox.wait_for("ann@example.com")

    real = claims_of(access(ann))
    # The forging works: the same claims, freshly signed with the hub's key, are accepted.
    control = forge(fresh_claims(real))
    assert (await client.get(SESSION, headers=bearer(control))).status_code == 200

    now = int(time.time())
    tokens = {
        "alg none": forge(fresh_claims(real), algorithm="none"),
        "alg none, signature kept": forge(fresh_claims(real), algorithm="none")
        + control.rsplit(".", 1)[1],
        "HS256 with another key": forge(fresh_claims(real), key=OTHER_KEY),
        "HS512 with the hub's key": forge(fresh_claims(real), algorithm="HS512"),
        "expired": forge(fresh_claims(real, iat=now - 1200, exp=now - 600)),
        "expired a second ago": forge(fresh_claims(real, exp=now - 1)),
        "no exp": forge(fresh_claims(real, exp=None)),
        "no iat": forge(fresh_claims(real, iat=None)),
        "no sub": forge(fresh_claims(real, sub=None)),
        "no sid": forge(fresh_claims(real, sid=None)),
        "no aud": forge(fresh_claims(real, aud=None)),
        "no iss": forge(fresh_claims(real, iss=None)),
        "wrong audience": forge(fresh_claims(real, aud="kai:refresh")),
        "foreign audience": forge(fresh_claims(real, aud="someone-else")),
        "wrong issuer": forge(fresh_claims(real, iss="evil")),
        "sid of a logged-out session": forge(fresh_claims(real, sid=ended["session"])),
        "valid token of a logged-out session": access(ended),
        "sid of no session": forge(fresh_claims(real, sid="00000000-0000-0000-0000-000000000000")),
        "sid of another user's session": forge(fresh_claims(real, sid=bob["session"])),
        "sub of another user": forge(fresh_claims(real, sub=bob["user"]["id"])),
        "refresh token": refresh(ann),
        "magic-link token": magic_token(mail),
        "garbage": "garbage",
        "three dots": "a.b.c",
        "empty segments": "..",
        "tampered payload": ".".join(
            [
                access(ann).split(".")[0],
                forge(fresh_claims(real, sub=bob["user"]["id"])).split(".")[1],
                access(ann).split(".")[2],
            ]
        ),
    }
    for case, token in tokens.items():
        await assert_refused(client, bearer(token), case)

    basic = base64.b64encode(b"ann@example.com:correct horse battery").decode()
    schemes = {
        "Basic credentials": {"Authorization": f"Basic {basic}"},
        "Basic scheme with a valid token": {"Authorization": f"Basic {access(ann)}"},
        "Token scheme": {"Authorization": f"Token {access(ann)}"},
        "no scheme": {"Authorization": access(ann)},
        "no header": {},
        "token in a cookie": {"Cookie": f"token={access(ann)}"},
    }
    for case, headers in schemes.items():
        await assert_refused(client, headers, case)

    # None of that harmed the real session.
    session = await client.get(SESSION, headers=bearer(access(ann)))
    assert session.status_code == 200
    assert session.json()["session"]["id"] == ann["session"]
