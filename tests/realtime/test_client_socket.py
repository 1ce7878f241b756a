"""``/ws/agents/{agentId}``: who may watch, what a watcher receives, and how it may talk back."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from kai.realtime.connection import ClientConnection
from tests.agents.support import People, agent_socket
from tests.helpers import PASSWORD, Api
from tests.realtime import client_support as support
from tests.realtime.client_support import (
    PUBLIC_URL,
    Hubs,
    check_sequence,
    log,
    refused_with,
    watch,
)

# The fixtures these tests use, by name.
mode = support.mode
hubs = support.hubs
backing = support.backing
shared_redis_url = support.shared_redis_url

AUTH_FAILED = (1008, "Authentication failed")
ACCESS_DENIED = (1008, "Access denied")


def is_utc(timestamp: Any) -> bool:
    """An ISO 8601 time in UTC, written with a ``Z``."""
    if not (isinstance(timestamp, str) and timestamp.endswith("Z")):
        return False
    return datetime.fromisoformat(timestamp).utcoffset() == timedelta(0)


def check_snapshot(message: dict[str, Any], agent_id: str, *, status: str) -> None:
    assert message["type"] == "status_update", message
    assert message["snapshot"] is True
    assert message["agentId"] == agent_id
    assert message["status"] == status
    assert message["health"] in {"healthy", "degraded", "unhealthy", "unknown"}
    assert "statusMessage" in message
    assert isinstance(message["seq"], int)
    assert message["seq"] >= 0
    assert isinstance(message["epoch"], str)
    assert message["epoch"]
    assert is_utc(message["timestamp"]), message


# -- connecting ----------------------------------------------------------------------------------


async def test_a_watcher_authenticates_by_header_or_first_message_and_gets_the_status_first(
    hubs: Hubs,
) -> None:
    server = await hubs.start()
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()

    async with watch(server, created.agent_id, ann.token) as by_header:
        first = await by_header.recv()
    check_snapshot(first, created.agent_id, status="offline")
    assert first["health"] == "unknown"

    async with watch(server, created.agent_id, ann.token, by_message=True) as by_message:
        again = await by_message.recv()
        check_snapshot(again, created.agent_id, status="offline")
        assert (again["seq"], again["epoch"]) == (first["seq"], first["epoch"])
        # Once in, another auth message is only an error.
        await by_message.send({"type": "auth", "token": ann.token})
        assert (await by_message.recv())["error"] == "Already authenticated"
        await by_message.heartbeat()

    # The snapshot tells the agent's state now, and its seq is where the live events go on.
    async with agent_socket(server.ws_url, created.token) as agent:
        await agent.hello()
        async with watch(server, created.agent_id, ann.token) as watcher:
            now = await watcher.recv()
            check_snapshot(now, created.agent_id, status="online")
            assert now["health"] == "healthy"
            assert now["seq"] == first["seq"] + 1  # the hello's status_update
            assert now["epoch"] == first["epoch"]


@pytest.mark.parametrize("mode", ["embedded"])  # who may connect does not depend on the broker
async def test_no_token_in_time_bad_tokens_and_foreign_agents_are_refused(hubs: Hubs) -> None:
    server = await hubs.start()
    people = People(server)
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    created = await ann.create_agent()
    agent_id = created.agent_id

    async def silent() -> tuple[float, tuple[int | None, str | None]]:
        started = time.monotonic()
        closed = await refused_with(server, agent_id, None)
        return time.monotonic() - started, closed

    # A watcher that never authenticates is dropped after 5 s; the rest runs meanwhile.
    waiting = asyncio.create_task(silent())

    assert await refused_with(server, agent_id, "not-a-token") == AUTH_FAILED
    assert await refused_with(server, agent_id, ann.token + "x") == AUTH_FAILED
    assert await refused_with(server, agent_id, "bad", by_message=True) == AUTH_FAILED
    assert await refused_with(server, agent_id, created.token) == AUTH_FAILED  # an agent's token
    async with watch(server, agent_id, None) as wrong_first:
        await wrong_first.send({"type": "heartbeat"})
        assert await wrong_first.closed() == AUTH_FAILED
    async with watch(server, agent_id, None) as not_json:
        await not_json.send("{nope")
        assert await not_json.closed() == AUTH_FAILED

    # A valid user who may not read this agent: someone else's, or a role without agents:read.
    assert await refused_with(server, agent_id, bob.token) == ACCESS_DENIED
    assert await refused_with(server, agent_id, bob.token, by_message=True) == ACCESS_DENIED
    assert await refused_with(server, "no-such-agent", ann.token) == ACCESS_DENIED
    bot = await people.join("bot@example.com", role="agent")
    assert await refused_with(server, agent_id, bot.token) == ACCESS_DENIED
    bots_own = await people.join("bot2@example.com")
    own = await bots_own.create_agent()
    admin = await people.admin()
    response = await admin.call("PUT", f"/api/users/{bots_own.user_id}", json={"role": "agent"})
    assert response.status_code == 200, response.text
    fresh = await Api(server.client).login(bots_own.email, PASSWORD)
    token = fresh["tokens"]["accessToken"]["token"]
    assert await refused_with(server, own.agent_id, token) == ACCESS_DENIED  # even its own

    # An admin may watch anyone's agent.
    async with watch(server, agent_id, admin.token) as watcher:
        check_snapshot(await watcher.recv(), agent_id, status="offline")

    elapsed, closed = await waiting
    assert closed == AUTH_FAILED
    assert 4.5 <= elapsed <= 7.0, elapsed


async def test_origins_are_checked(hubs: Hubs) -> None:
    allowed = "https://app.example.com"
    server = await hubs.start(ws_allowed_origins=[allowed])
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()

    for origin in ("https://evil.example.com", "http://hub.test:8080", "null"):
        closed = await refused_with(server, created.agent_id, ann.token, origin=origin)
        assert closed == (1008, "Origin not allowed"), origin
    for welcome in (allowed, PUBLIC_URL, None):
        async with watch(server, created.agent_id, ann.token, origin=welcome) as watcher:
            check_snapshot(await watcher.recv(), created.agent_id, status="offline")

    # The origin is refused before anyone is authenticated: a bad token changes nothing.
    closed = await refused_with(server, created.agent_id, "bad", origin="https://evil.example.com")
    assert closed == (1008, "Origin not allowed")


async def test_any_origin_when_the_allow_list_says_star(hubs: Hubs) -> None:
    server = await hubs.start(ws_allowed_origins=["*"])
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    async with watch(server, created.agent_id, ann.token, origin="https://x.example") as watcher:
        check_snapshot(await watcher.recv(), created.agent_id, status="offline")


# -- live events ---------------------------------------------------------------------------------


async def test_live_status_and_log_events_arrive_in_order_gap_free(hubs: Hubs) -> None:
    server = await hubs.start()
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    agent_id = created.agent_id

    async with watch(server, agent_id, ann.token) as watcher:
        snapshot = await watcher.recv()
        head, epoch = snapshot["seq"], snapshot["epoch"]
        async with agent_socket(server.ws_url, created.token) as agent:
            await agent.hello()
            online = await watcher.recv()
            await agent.send(
                {
                    "type": "log",
                    "records": [
                        {"level": "INFO", "message": "one", "logger": "app", "extra": {"k": 1}},
                        {"level": "ERROR", "message": "two", "timestamp": "2030-01-02T03:04:05Z"},
                    ],
                }
            )
            logs = await watcher.take(2)
            await agent.send({"type": "status", "status": "busy", "message": "crunching"})
            busy = await watcher.recv()
        offline = await watcher.recv()
        events = [online, *logs, busy, offline]
        check_sequence(events, after=head, epoch=epoch)
        await watcher.quiet()

    for event in events:
        assert event["agentId"] == agent_id
        assert is_utc(event["timestamp"]), event
        assert "snapshot" not in event
    assert [e["type"] for e in events] == [
        "status_update",
        *["log_stream"] * 2,
        *["status_update"] * 2,
    ]
    assert [(e["status"], e["health"]) for e in (online, busy, offline)] == [
        ("online", "healthy"),
        ("busy", "healthy"),
        ("offline", "unknown"),
    ]
    assert busy["statusMessage"] == "crunching"
    one, two = (e["entry"] for e in logs)
    assert (one["message"], one["level"], one["logger"], one["source"], one["extra"]) == (
        "one",
        "INFO",
        "app",
        "agent",
        {"k": 1},
    )
    assert is_utc(one["timestamp"])
    assert (two["message"], two["level"], two["timestamp"]) == (
        "two",
        "ERROR",
        "2030-01-02T03:04:05Z",
    )


async def test_every_watcher_of_an_agent_gets_the_same_events(hubs: Hubs) -> None:
    """Two watchers, on two nodes in Redis mode, see one numbering."""
    one, two = await hubs.pair()
    ann = await People(one).join("ann@example.com")
    created = await ann.create_agent()

    async with (
        watch(one, created.agent_id, ann.token) as first,
        watch(two, created.agent_id, ann.token) as second,
    ):
        heads = [await first.recv(), await second.recv()]
        assert heads[0]["seq"] == heads[1]["seq"]
        async with agent_socket(one.ws_url, created.token) as agent:
            await agent.hello()
            await log(agent, 20)
        seen = [await first.take(22), await second.take(22)]
    assert seen[0] == seen[1]
    check_sequence(seen[0], after=heads[0]["seq"], epoch=heads[0]["epoch"])


# -- what a watcher may send ---------------------------------------------------------------------


async def test_bad_messages_are_answered_and_never_close_the_socket(hubs: Hubs) -> None:
    server = await hubs.start()
    limit = server.settings.ws_max_message_bytes
    assert limit == 64 * 1024
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()

    async with watch(server, created.agent_id, ann.token) as watcher:
        snapshot = await watcher.recv()
        answer = await watcher.heartbeat()
        assert set(answer) == {"type", "timestamp"}
        assert is_utc(answer["timestamp"])

        async def answer_to(message: dict[str, Any] | str | bytes) -> dict[str, Any]:
            await watcher.send(message)
            reply = await watcher.recv()
            await watcher.heartbeat()  # still open, still answering
            return reply

        read_only = {"type": "error", "error": "Status updates are read-only"}
        invalid = {"type": "error", "error": "Invalid message format"}
        assert await answer_to({"type": "status_update", "status": "online"}) == read_only
        assert await answer_to("{not json") == invalid
        assert await answer_to("[1, 2]") == invalid
        assert await answer_to('"heartbeat"') == invalid
        assert await answer_to({"no": "type"}) == invalid
        assert await answer_to({"type": 7}) == invalid
        assert await answer_to(b"\xff\xfe") == invalid
        assert await answer_to({"type": "explode"}) == {
            "type": "error",
            "error": "Unknown message type: explode",
        }
        too_large = {"type": "error", "error": "Message too large", "maxBytes": limit}
        assert await answer_to({"type": "heartbeat", "pad": "x" * limit}) == too_large
        assert await answer_to("y" * (limit + 1)) == too_large
        # The limit is in bytes: 40,000 characters of two bytes each are over it.
        assert await answer_to({"type": "heartbeat", "pad": "é" * 40_000}) == too_large
        assert await answer_to(b"z" * (limit + 1)) == too_large
        # Just under the limit is a message like any other.
        fits = orjson_len({"type": "heartbeat", "pad": ""})
        assert (await answer_to({"type": "heartbeat", "pad": "x" * (limit - fits)}))["type"] == (
            "heartbeat"
        )
        bad_resume = await answer_to({"type": "resume", "since": "yesterday"})
        assert bad_resume["type"] == "error"

        # And the watcher still gets the agent's events, numbered on from the snapshot.
        async with agent_socket(server.ws_url, created.token) as agent:
            await agent.hello()
            online = await watcher.recv()
        assert online["seq"] == snapshot["seq"] + 1
        assert online["status"] == "online"


def orjson_len(message: dict[str, Any]) -> int:
    return len(orjson.dumps(message))


@pytest.mark.parametrize("mode", ["embedded"])
async def test_auth_by_message_accepts_only_a_text_auth_object(hubs: Hubs) -> None:
    server = await hubs.start()
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    for first in (
        b'{"type": "auth", "token": "' + ann.token.encode() + b'"}',  # a binary frame
        '{"type": "auth"}',
        '{"type": "auth", "token": 5}',
        "[]",
    ):
        async with watch(server, created.agent_id, None) as watcher:
            await watcher.send(first)
            assert await watcher.closed() == AUTH_FAILED, first


@pytest.mark.parametrize("mode", ["embedded"])
async def test_a_failing_handler_is_answered_with_a_safe_error(hubs: Hubs) -> None:
    """Handlers plug in by type (commands, uploads, streams will); one that fails tells the
    client which kind of failure, never its text, and the socket goes on."""
    server = await hubs.start()

    async def explode(conn: ClientConnection, message: dict[str, Any]) -> None:
        raise RuntimeError("database password is hunter2")

    server.hub.ws_handlers.register("explode", explode)
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    async with watch(server, created.agent_id, ann.token) as watcher:
        await watcher.recv()
        await watcher.send({"type": "explode"})
        assert await watcher.recv() == {
            "type": "error",
            "error": "Message handling failed",
            "details": "RuntimeError",
        }
        await watcher.heartbeat()
