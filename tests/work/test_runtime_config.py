"""``/api/config``: runtime settings read with their sources, changed with validation, stored,
audited, applied at once (a command's default deadline), on another node too, and after a
restart."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from kai.auth.models import AuditEvent
from kai.ops.runtime import RuntimeSetting
from tests.agents.conftest import ServerStarter
from tests.agents.support import HubServer, People, agent_socket, eventually
from tests.helpers import assert_problem
from tests.realtime.client_support import Hubs
from tests.work.support import kept_alive, payload

SECRETS = {"secretKey", "databaseUrl", "redisUrl", "adminPassword", "smtpUrl"}


async def test_settings_are_read_with_their_source_and_no_secret(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")  # a user may read (config:read)
    response = await ann.call("GET", "/api/config")
    assert response.status_code == 200, response.text
    settings = payload(response)["settings"]
    assert not SECRETS & set(settings)
    assert "commandTimeout" in settings
    queue = settings["wsSendQueue"]
    assert (queue["value"], queue["source"]) == (server.settings.ws_send_queue, "default")
    assert queue["environmentVariable"] == "KAI_WS_SEND_QUEUE"
    assert (queue["updatedBy"], queue["updatedAt"]) == (None, None)
    assert isinstance(queue["description"], str)
    # A user may not change them; the agent role may not even read them.
    changed = await ann.call("PUT", "/api/config", json={"settings": {"wsSendQueue": 5}})
    assert_problem(changed, 403, "Insufficient permissions: config:update")
    bot = await people.join("bot@example.com", role="agent")
    assert_problem(await bot.call("GET", "/api/config"), 403)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"commandTimeout": -1}, "commandTimeout"),
        ({"commandTimeout": 301}, "commandTimeout"),
        ({"commandTimeout": 200, "commandMaxTimeout": 100}, "commandTimeout"),
        ({"wsRateLimit": "many"}, "wsRateLimit"),
        ({"logLevel": "LOUD"}, "logLevel"),
        ({"secretKey": "x" * 40}, "secretKey"),
        ({"databaseUrl": "sqlite://"}, "databaseUrl"),
    ],
)
async def test_invalid_changes_are_refused_with_the_field(
    server: HubServer, people: People, change: dict[str, object], field: str
) -> None:
    admin = await people.admin()
    before = payload(await admin.call("GET", "/api/config"))["settings"]
    response = await admin.call("PUT", "/api/config", json={"settings": change})
    assert_problem(response, 422, "Invalid settings")
    assert field in {error["field"] for error in payload(response)["errors"]}
    assert payload(await admin.call("GET", "/api/config"))["settings"] == before


async def test_a_change_is_stored_audited_applied_and_taken_back(
    server: HubServer, people: People
) -> None:
    dev = await people.join("dev@example.com", role="developer")
    response = await dev.call(
        "PUT", "/api/config", json={"settings": {"commandTimeout": 0.5, "taskMaxAttempts": 5}}
    )
    assert response.status_code == 200, response.text
    body = payload(response)
    assert body["updatedFields"] == ["commandTimeout", "taskMaxAttempts"]
    timeout = body["settings"]["commandTimeout"]
    assert (timeout["value"], timeout["source"], timeout["updatedBy"]) == (
        0.5,
        "runtime",
        dev.user_id,
    )
    assert timeout["updatedAt"].endswith("Z")
    hub = server.hub
    assert (hub.settings.command_timeout, hub.settings.task_max_attempts) == (0.5, 5)
    async with hub.db.session(write=False) as session:
        stored = {row.key: row.value for row in await session.scalars(select(RuntimeSetting))}
    assert stored == {"command_timeout": 0.5, "task_max_attempts": 5}

    # The new default deadline holds for the next command.
    created = await dev.create_agent("silent")
    async with agent_socket(server.ws_url, created.token) as raw, kept_alive(raw):
        await raw.hello("silent", commands=["wait"])
        await dev.wait_status(created.agent_id, "online")
        answer = await dev.call(
            "POST", f"/api/agents/{created.agent_id}/command", json={"command": "wait"}
        )
    assert_problem(answer, 504, "The agent did not answer within 0.5 s")

    await hub.audit.flush()
    async with hub.db.session(write=False) as session:
        audited = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.permission == "auth:config_changed")
            )
        )
    assert [(a.user_id, a.detail) for a in audited] == [
        (dev.user_id, "commandTimeout=0.5,taskMaxAttempts=5")
    ]

    # null takes the change back to the default.
    response = await dev.call("PUT", "/api/config", json={"settings": {"commandTimeout": None}})
    assert response.status_code == 200, response.text
    timeout = payload(response)["settings"]["commandTimeout"]
    assert (timeout["value"], timeout["source"]) == (30.0, "default")
    assert hub.settings.command_timeout == 30.0


async def test_a_change_survives_a_restart(start_server: ServerStarter) -> None:
    async with start_server() as first:
        admin = await People(first).admin()
        response = await admin.call("PUT", "/api/config", json={"settings": {"streamTtl": 99}})
        assert response.status_code == 200, response.text
    async with start_server() as second:
        assert second.hub.settings.stream_ttl == 99
        admin = await People(second).admin()
        ttl = payload(await admin.call("GET", "/api/config"))["settings"]["streamTtl"]
        assert (ttl["value"], ttl["source"]) == (99, "runtime")


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_change_applies_on_every_node(hubs: Hubs) -> None:
    near, far = await hubs.pair()
    admin = await People(far).admin()
    response = await admin.call("PUT", "/api/config", json={"settings": {"uploadMaxBytes": 1234}})
    assert response.status_code == 200, response.text

    async def applied() -> bool:
        return near.hub.settings.upload_max_bytes == 1234

    await eventually(applied, 5, what="the change on the other node")
    near_admin = await People(near).admin()
    created = await near_admin.create_agent("files")
    upload = await near_admin.call(
        "POST", f"/api/agents/{created.agent_id}/upload", files={"file": ("a.bin", b"x" * 2000)}
    )
    assert_problem(upload, 413, "File is larger than 1234 bytes")
