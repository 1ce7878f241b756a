"""An auth answer goes out only once what it reports has been committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from kai.auth import store
from tests.auth.conftest import HubStarter, Started
from tests.auth.support import access, session_status
from tests.helpers import PASSWORD, Api, bearer

OnStart = Callable[[], Awaitable[None]]


async def call(
    hub: Started, method: str, path: str, *, body: Any, headers: dict[str, str], on_start: OnStart
) -> tuple[int, bytes]:
    """Drive the ASGI app by hand, running ``on_start`` the moment the answer starts."""
    raw = orjson.dumps(body) if body is not None else b""
    header_list = [(b"host", b"testserver")]
    if body is not None:
        header_list += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ]
    header_list += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": header_list,
        "client": ("127.0.0.1", 5555),
        "server": ("testserver", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            await on_start()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await hub.asgi(scope, receive, send)
    return status, b"".join(chunks)


async def test_a_registered_account_exists_when_the_answer_starts(start: HubStarter) -> None:
    seen: list[bool] = []
    async with start() as hub:

        async def look() -> None:
            async with hub.hub.db.session(write=False) as session:
                seen.append(await store.user_by_email(session, "ann@example.com") is not None)

        status, _ = await call(
            hub,
            "POST",
            "/api/auth/register",
            body={"userData": {"email": "ann@example.com", "password": PASSWORD}},
            headers={},
            on_start=look,
        )
    assert status == 201
    assert seen == [True]


async def test_a_logged_out_token_is_dead_when_the_answer_starts(start: HubStarter) -> None:
    seen: list[int] = []
    async with start() as hub:
        api = Api(hub.client)
        await api.register("ann@example.com")
        token = access(await api.login("ann@example.com"))

        async def look() -> None:
            async with hub.connect(("127.0.0.1", 6666)) as other:
                seen.append(await session_status(other, token))

        status, body = await call(
            hub, "POST", "/api/auth/logout", body=None, headers=bearer(token), on_start=look
        )
    assert status == 200, body
    assert seen == [401]


async def test_a_disabled_users_token_is_dead_when_the_answer_starts(start: HubStarter) -> None:
    seen: list[int] = []
    async with start() as hub:
        api = Api(hub.client)
        await api.register("ann@example.com")
        login = await api.login("ann@example.com")
        admin = await api.admin_token()

        async def look() -> None:
            async with hub.connect(("127.0.0.1", 6666)) as other:
                seen.append(await session_status(other, access(login)))

        status, body = await call(
            hub,
            "PUT",
            f"/api/users/{login['user']['id']}",
            body={"disabled": True},
            headers=bearer(admin),
            on_start=look,
        )
    assert status == 200, body
    assert seen == [401]
