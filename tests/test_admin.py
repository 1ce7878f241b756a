"""Admin routes: the user list and its changes, the audit log and its filters, and the audit
writer's promise that a clean shutdown loses nothing."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from sqlalchemy import func, select

from kai.app import create_app
from kai.auth.models import AuditEvent
from kai.config import Settings
from kai.container import Container as Hub
from kai.db import Database
from tests.conftest import Mailbox, Serve
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Api, assert_problem, bearer

LAST_ADMIN = "The last active admin cannot be demoted or disabled"


async def _get(client: httpx.AsyncClient, path: str, token: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def _put_user(
    client: httpx.AsyncClient, token: str, user_id: str, **changes: Any
) -> httpx.Response:
    return await client.put(f"/api/users/{user_id}", json=changes, headers=bearer(token))


async def _people(api: Api) -> dict[str, str]:
    """Five users besides the admin, registered in this order; returns email -> id."""
    people = {}
    for email, name in [
        ("alice@example.com", "Alice Archer"),
        ("bob@example.com", "Bob Builder"),
        ("carol@example.com", "Carol"),
        ("dave@example.com", None),
        ("erin@example.org", "Erin"),
    ]:
        extra = {"name": name} if name else {}
        people[email] = (await api.register(email, **extra))["user"]["id"]
    return people


# -- GET /api/users ----------------------------------------------------------------------------


async def test_users_paging(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    people = await _people(api)
    everyone = [ADMIN_EMAIL, *people]

    page = await _get(client, "/api/users", admin, limit=2)
    assert page["total"] == 6
    assert [u["email"] for u in page["users"]] == everyone[:2]
    assert (page["hasMore"], page["nextOffset"]) == (True, 2)

    page = await _get(client, "/api/users", admin, limit=2, offset=4)
    assert [u["email"] for u in page["users"]] == everyone[4:]
    assert (page["hasMore"], page["nextOffset"]) == (False, None)

    page = await _get(client, "/api/users", admin, limit=2, offset=6)
    assert page == {"total": 6, "hasMore": False, "nextOffset": None, "users": []}

    walked: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await _get(client, "/api/users", admin, limit=4, offset=offset)
        walked += [u["email"] for u in page["users"]]
        offset = page["nextOffset"]
    assert walked == everyone

    user = (await _get(client, "/api/users", admin, q="alice"))["users"][0]
    assert set(user) == {
        "id",
        "email",
        "name",
        "role",
        "emailVerified",
        "createdAt",
        "disabled",
        "updatedAt",
    }
    assert user["createdAt"].endswith("Z")


async def test_users_paging_bounds(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 2**31}):
        response = await client.get("/api/users", params=params, headers=bearer(admin))
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] == f"query.{next(iter(params))}"
    page = await _get(client, "/api/users", admin, limit=500, offset=2**31 - 1)
    assert page["users"] == []


async def test_users_filter_by_role_and_text(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    people = await _people(api)
    for email in ("bob@example.com", "dave@example.com"):
        response = await _put_user(client, admin, people[email], role="developer")
        assert response.status_code == 200

    developers = await _get(client, "/api/users", admin, role="developer")
    assert [u["email"] for u in developers["users"]] == ["bob@example.com", "dave@example.com"]
    assert developers["total"] == 2
    assert (await _get(client, "/api/users", admin, role="admin"))["total"] == 1
    assert (await _get(client, "/api/users", admin, role="agent"))["total"] == 0
    assert (await _get(client, "/api/users", admin, role="user"))["total"] == 3

    def emails(page: dict[str, Any]) -> list[str]:
        return [u["email"] for u in page["users"]]

    assert emails(await _get(client, "/api/users", admin, q="CAROL")) == ["carol@example.com"]
    assert emails(await _get(client, "/api/users", admin, q="builder")) == ["bob@example.com"]
    assert emails(await _get(client, "/api/users", admin, q="example.org")) == ["erin@example.org"]
    both = await _get(client, "/api/users", admin, q="example.com", role="developer", limit=1)
    assert (both["total"], emails(both)) == (2, ["bob@example.com"])
    # The query is text to find, not a LIKE pattern.
    assert (await _get(client, "/api/users", admin, q="%"))["total"] == 0
    assert (await _get(client, "/api/users", admin, q="_"))["total"] == 0
    assert (await _get(client, "/api/users", admin, q="nobody-at-all"))["total"] == 0

    response = await client.get("/api/users", params={"role": "root"}, headers=bearer(admin))
    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == "query.role"


# -- PUT /api/users/{id} -----------------------------------------------------------------------


async def test_change_role(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    user_id = (await api.register("ann@example.com"))["user"]["id"]
    token = str((await api.login("ann@example.com"))["tokens"]["accessToken"]["token"])

    response = await _put_user(client, admin, user_id, role="developer")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["updatedFields"] == ["role"]
    assert body["user"]["role"] == "developer"
    assert body["user"]["id"] == user_id
    # The role applies to the user's next request, on the session they already hold.
    session = await _get(client, "/api/auth/session", token)
    assert session["user"]["role"] == "developer"
    assert "services:restart" in session["permissions"]

    again = await _put_user(client, admin, user_id, role="developer")
    assert again.json()["updatedFields"] == []
    renamed = await _put_user(client, admin, user_id, name="Ann", role="developer")
    assert renamed.json()["updatedFields"] == ["name"]
    assert renamed.json()["user"]["name"] == "Ann"


async def test_disable_ends_sessions_at_once(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    user_id = (await api.register("ann@example.com"))["user"]["id"]
    login = await api.login("ann@example.com")
    token = login["tokens"]["accessToken"]["token"]
    refresh = login["tokens"]["refreshToken"]["token"]
    assert (await client.get("/api/auth/session", headers=bearer(token))).status_code == 200

    response = await _put_user(client, admin, user_id, disabled=True)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["disabled"] is True
    assert response.json()["updatedFields"] == ["disabled"]

    response = await client.get("/api/auth/session", headers=bearer(token))
    assert_problem(response, 401, "Invalid or expired session")
    response = await client.post("/api/auth/refresh", json={"refreshToken": refresh})
    assert_problem(response, 401)
    response = await client.post(
        "/api/auth/login", json={"credentials": {"email": "ann@example.com", "password": PASSWORD}}
    )
    assert_problem(response, 401, "Authentication failed")

    response = await _put_user(client, admin, user_id, disabled=False)
    assert response.json()["user"]["disabled"] is False
    fresh = await api.login("ann@example.com")
    assert fresh["user"]["id"] == user_id
    # The old session stays dead: re-enabling does not bring it back.
    response = await client.get("/api/auth/session", headers=bearer(token))
    assert_problem(response, 401)


async def test_update_unknown_user_and_bad_values(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    response = await _put_user(client, admin, "00000000-0000-4000-8000-000000000000", role="user")
    assert_problem(response, 404, "User not found")
    user_id = (await api.register("ann@example.com"))["user"]["id"]
    for bad in ({"role": "superuser"}, {"role": "ADMIN"}, {"disabled": "maybe"}, {"name": ""}):
        response = await _put_user(client, admin, user_id, **bad)
        assert_problem(response, 422)
        assert response.json()["errors"][0]["field"] == next(iter(bad))
    users = await _get(client, "/api/users", admin, q="ann@")
    assert users["users"][0]["role"] == "user"


async def test_last_active_admin_stays(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    me = (await _get(client, "/api/auth/session", admin))["user"]["id"]
    for change in ({"role": "developer"}, {"disabled": True}, {"role": "user", "disabled": True}):
        response = await _put_user(client, admin, me, **change)
        assert_problem(response, 409, LAST_ADMIN)

    other = (await api.register("second@example.com"))["user"]["id"]
    assert (await _put_user(client, admin, other, role="admin")).status_code == 200
    # A disabled admin is no admin: with the second one disabled, the first is the last again.
    assert (await _put_user(client, admin, other, disabled=True)).status_code == 200
    assert_problem(await _put_user(client, admin, me, role="user"), 409, LAST_ADMIN)
    assert (await _put_user(client, admin, other, disabled=False)).status_code == 200

    second = str((await api.login("second@example.com"))["tokens"]["accessToken"]["token"])
    response = await _put_user(client, second, me, role="user")
    assert response.status_code == 200, response.text
    assert response.json()["user"]["role"] == "user"
    # The demoted admin lost the admin routes on their very next request.
    response = await client.get("/api/users", headers=bearer(admin))
    assert_problem(response, 403, "Insufficient permissions: system:admin")
    assert_problem(await _put_user(client, second, other, role="developer"), 409, LAST_ADMIN)
    assert_problem(await _put_user(client, second, other, disabled=True), 409, LAST_ADMIN)
    assert (await _get(client, "/api/users", second, role="admin"))["total"] == 1


# -- GET /api/audit ----------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _login_fails(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post(
        "/api/auth/login", json={"credentials": {"email": email, "password": "wrong password"}}
    )
    assert_problem(response, 401)


async def test_audit_filters(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    admin_id = (await _get(client, "/api/auth/session", admin))["user"]["id"]
    ann = await api.user_token("ann@example.com")
    ann_id = (await _get(client, "/api/auth/session", ann))["user"]["id"]
    await _login_fails(client, "ann@example.com")
    assert (await client.get("/api/users", headers=bearer(ann))).status_code == 403

    def pairs(page: dict[str, Any]) -> list[tuple[str, bool]]:
        return [(e["permission"], e["granted"]) for e in page["events"]]

    mine = await _get(client, "/api/audit", admin, userId=ann_id)
    # Newest first: the denial, the failed login, the login, the registration.
    assert pairs(mine) == [
        ("system:admin", False),
        ("auth:login", False),
        ("auth:login", True),
        ("auth:register", True),
    ]
    assert all(e["userId"] == ann_id for e in mine["events"])
    stamps = [e["timestamp"] for e in mine["events"]]
    assert stamps == sorted(stamps, reverse=True)

    logins = await _get(client, "/api/audit", admin, permission="auth:login")
    assert {(e["userId"], e["granted"]) for e in logins["events"]} == {
        (admin_id, True),
        (ann_id, True),
        (ann_id, False),
    }
    denied = await _get(client, "/api/audit", admin, decision="denied")
    assert sorted(pairs(denied)) == [("auth:login", False), ("system:admin", False)]
    granted = await _get(client, "/api/audit", admin, decision="granted", userId=ann_id)
    assert pairs(granted) == [("auth:login", True), ("auth:register", True)]

    auth_kind = await _get(client, "/api/audit", admin, kind="auth", userId=ann_id)
    assert {e["kind"] for e in auth_kind["events"]} == {"auth"}
    assert auth_kind["total"] == 3
    permission_kind = await _get(client, "/api/audit", admin, kind="permission")
    assert {e["kind"] for e in permission_kind["events"]} == {"permission"}
    assert {e["permission"] for e in permission_kind["events"]} == {"system:admin"}

    for bad in ({"decision": "maybe"}, {"kind": "other"}, {"startTime": "yesterday"}):
        response = await client.get("/api/audit", params=bad, headers=bearer(admin))
        assert_problem(response, 422)


async def test_audit_time_window(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    await _login_fails(client, "early@example.com")
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await _login_fails(client, "late@example.com")
    await asyncio.sleep(0.01)
    end = datetime.now(UTC)

    def resources(page: dict[str, Any]) -> list[str]:
        return [e["resource"] for e in page["events"]]

    query = {"permission": "auth:login", "decision": "denied"}
    everything = await _get(client, "/api/audit", admin, **query)
    assert resources(everything) == ["late@example.com", "early@example.com"]
    after = await _get(client, "/api/audit", admin, startTime=_iso(middle), **query)
    assert resources(after) == ["late@example.com"]
    before = await _get(client, "/api/audit", admin, endTime=_iso(middle), **query)
    assert resources(before) == ["early@example.com"]
    window = await _get(client, "/api/audit", admin, startTime=_iso(middle), endTime=_iso(end))
    assert {e["resource"] for e in window["events"] if e["permission"] == "auth:login"} == {
        "late@example.com"
    }
    # A time without an offset is UTC; one with another offset means the same instant.
    naive = middle.replace(tzinfo=None).isoformat()
    assert resources(await _get(client, "/api/audit", admin, startTime=naive, **query)) == [
        "late@example.com"
    ]
    elsewhere = middle.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert "-05:00" in elsewhere
    assert resources(await _get(client, "/api/audit", admin, endTime=elsewhere, **query)) == [
        "early@example.com"
    ]
    empty = await _get(client, "/api/audit", admin, startTime=_iso(end), endTime=_iso(middle))
    assert empty["total"] == 0


async def test_audit_paging(client: httpx.AsyncClient, api: Api, hub: Hub) -> None:
    admin = await api.admin_token()
    for n in range(7):
        hub.audit.permission("agents:read", granted=n % 2 == 0, user_id=None, resource=f"r{n}")
    query = {"permission": "agents:read"}
    first = await _get(client, "/api/audit", admin, limit=3, **query)
    assert (first["total"], first["hasMore"], first["nextOffset"]) == (7, True, 3)
    assert [e["resource"] for e in first["events"]] == ["r6", "r5", "r4"]
    last = await _get(client, "/api/audit", admin, limit=3, offset=6, **query)
    assert [e["resource"] for e in last["events"]] == ["r0"]
    assert (last["hasMore"], last["nextOffset"]) == (False, None)
    walked: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = await _get(client, "/api/audit", admin, limit=2, offset=offset, **query)
        walked += [e["resource"] for e in page["events"]]
        offset = page["nextOffset"]
    assert walked == [f"r{n}" for n in range(6, -1, -1)]
    denied = await _get(client, "/api/audit", admin, decision="denied", limit=2, **query)
    assert (denied["total"], denied["nextOffset"]) == (3, 2)


async def test_audit_of_auth_events(client: httpx.AsyncClient, api: Api, mailbox: Mailbox) -> None:
    admin = await api.admin_token()
    user_id = (await api.register("ann@example.com"))["user"]["id"]
    await _login_fails(client, "ann@example.com")
    await _login_fails(client, "ghost@example.com")
    login = await api.login("ann@example.com")
    token = login["tokens"]["accessToken"]["token"]

    refresh = login["tokens"]["refreshToken"]["token"]
    response = await client.post("/api/auth/refresh", json={"refreshToken": refresh})
    assert response.status_code == 200
    response = await client.post("/api/auth/refresh", json={"refreshToken": refresh})
    assert_problem(response, 401)

    second = await api.login("ann@example.com")
    response = await client.post(
        "/api/auth/logout", headers=bearer(second["tokens"]["accessToken"]["token"])
    )
    assert response.status_code == 200

    response = await client.post("/api/auth/magic-link", json={"email": "ann@example.com"})
    assert response.status_code == 202
    mail = (await mailbox.wait_for("ann@example.com"))[0]
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    found = re.search(r'"token": "([^"]+)"', payload.decode())
    assert found
    response = await client.post("/api/auth/verify-magic", json={"token": found[1]})
    assert response.status_code == 200
    response = await client.post("/api/auth/verify-magic", json={"token": found[1]})
    assert_problem(response, 400, "Invalid or expired magic link")

    events = (await _get(client, "/api/audit", admin, kind="auth", limit=500))["events"]

    def of(permission: str, granted: bool) -> list[dict[str, Any]]:
        return [e for e in events if e["permission"] == permission and e["granted"] is granted]

    assert [e["userId"] for e in of("auth:register", True)] == [user_id]
    failed = of("auth:login", False)
    assert {(e["userId"], e["resource"], e["detail"]) for e in failed} == {
        (user_id, "ann@example.com", "bad credentials"),
        (None, "ghost@example.com", "bad credentials"),
    }
    assert len([e for e in of("auth:login", True) if e["userId"] == user_id]) == 2
    assert [e["userId"] for e in of("auth:refresh", True)] == [user_id]
    reuse = of("auth:refresh_reuse", False)
    assert [e["userId"] for e in reuse] == [user_id]
    assert reuse[0]["resource"] == f"session:{login['session']}"
    assert [e["userId"] for e in of("auth:logout", True)] == [user_id]
    requested = of("auth:magic_link_requested", True)
    assert [(e["userId"], e["resource"]) for e in requested] == [(user_id, "ann@example.com")]
    assert [(e["userId"], e["detail"]) for e in of("auth:magic_link", True)] == [(user_id, "login")]
    assert [e["detail"] for e in of("auth:magic_link", False)] == ["invalid"]
    # The reused refresh token ended the first session.
    response = await client.get("/api/auth/session", headers=bearer(token))
    assert_problem(response, 401)


async def test_admin_changes_are_audited(client: httpx.AsyncClient, api: Api) -> None:
    admin = await api.admin_token()
    admin_id = (await _get(client, "/api/auth/session", admin))["user"]["id"]
    user_id = (await api.register("ann@example.com"))["user"]["id"]
    await _put_user(client, admin, user_id, role="developer", disabled=True)
    events = (await _get(client, "/api/audit", admin, permission="auth:user_updated"))["events"]
    assert [(e["userId"], e["resource"], e["granted"]) for e in events] == [
        (admin_id, f"user:{user_id}", True)
    ]
    assert events[0]["detail"] == "role=developer,disabled=True"


# -- the audit writer ---------------------------------------------------------------------------


async def _count(url: str, permission: str) -> int:
    db = Database(url)
    try:
        async with db.session(write=False) as session:
            query = select(func.count()).where(AuditEvent.permission == permission)
            return await session.scalar(query) or 0
    finally:
        await db.dispose()


async def test_clean_shutdown_loses_no_audit_entry(settings: Settings, serve: Serve) -> None:
    # No timer and no batch fills up while the hub runs: only the shutdown writes them.
    lazy = settings.model_copy(update={"audit_flush_interval": 3600, "audit_batch_size": 10**6})
    url = lazy.resolved_database_url
    total = 1234
    async with serve(create_app(lazy)) as started:
        audit = started.hub.audit
        for n in range(total):
            audit.permission("test:durable", granted=n % 3 != 0, user_id=None, resource=str(n))
        assert audit.pending >= total
        assert await _count(url, "test:durable") == 0
    assert await _count(url, "test:durable") == total


async def test_batches_are_written_while_running(settings: Settings, serve: Serve) -> None:
    small = settings.model_copy(update={"audit_flush_interval": 3600, "audit_batch_size": 50})
    async with serve(create_app(small)) as started:
        audit = started.hub.audit
        for n in range(120):
            audit.permission("test:batched", granted=True, user_id=None, resource=str(n))
        # A full batch wakes the writer without waiting for the (hour-long) timer.
        for _ in range(200):
            if await _count(small.resolved_database_url, "test:batched") >= 100:
                break
            await asyncio.sleep(0.02)
        assert await _count(small.resolved_database_url, "test:batched") >= 100


async def test_an_unwritable_value_does_not_block_the_audit_log(
    client: httpx.AsyncClient, api: Api, hub: Hub
) -> None:
    admin = await api.admin_token()
    hub.audit.permission("agents:read", granted=False, user_id="a\x00b", resource="x\x00y")
    hub.audit.permission("agents:read", granted=True, user_id=None, resource="r" * 1000)
    await hub.audit.flush()
    assert hub.audit.pending == 0
    page = await _get(client, "/api/audit", admin, permission="agents:read")
    assert [(e["userId"], len(e["resource"])) for e in page["events"]] == [(None, 400), ("ab", 2)]
    assert page["events"][1]["resource"] == "xy"
    await _login_fails(client, ADMIN_EMAIL)
    denied = await _get(client, "/api/audit", admin, permission="auth:login", decision="denied")
    assert denied["total"] == 1


async def test_audit_needs_admin(client: httpx.AsyncClient, api: Api) -> None:
    response = await client.get("/api/audit")
    assert_problem(response, 401)
    token = await api.user_token("ann@example.com")
    response = await client.get("/api/audit", headers=bearer(token))
    assert_problem(response, 403, "Insufficient permissions: system:admin")
    assert (await api.login(ADMIN_EMAIL, ADMIN_PASSWORD))["user"]["role"] == "admin"
