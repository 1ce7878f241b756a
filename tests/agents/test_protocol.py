"""Whatever an agent sends, the hub answers bad messages with ``error`` and keeps going."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as connect_sync

from kai.protocol.agent import AGENT_MESSAGE, MAX_LOG_BATCH, Heartbeat, Hello
from tests.agents.conftest import ServerStarter
from tests.agents.support import HubServer, People, agent_socket

# The fuzzing client is slower than a heartbeat interval: give it a patient hub.
PATIENT = {"agent_heartbeat_interval": 5.0, "agent_heartbeat_timeout": 30.0}
HELLO = {
    "type": "hello",
    "name": "fuzzed",
    "version": "9",
    "commands": ["a", "b"],
    "taskTypes": ["t"],
    "streaming": True,
    "maxConcurrency": 3,
}


def json_of(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=12,
    )


# Python's json writes NaN and Infinity, which are not JSON: more garbage for the hub.
json_values = json_of(st.floats())
finite_json = json_of(st.floats(allow_nan=False, allow_infinity=False))
FIELDS = [
    "type",
    "name",
    "version",
    "commands",
    "taskTypes",
    "streaming",
    "files",
    "maxConcurrency",
    "sdk",
    "health",
    "metrics",
    "status",
    "message",
    "records",
    "level",
    "timestamp",
]
TYPES = ["hello", "heartbeat", "status", "log", "welcome", "command_result", "HELLO", ""]
# Messages that look like the protocol's, with fields of the wrong kinds.
shaped = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(TYPES) | json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)
huge_batches = st.integers(MAX_LOG_BATCH + 1, MAX_LOG_BATCH + 100).map(
    lambda n: {"type": "log", "records": [{"message": "m", "level": "INFO"}] * n}
)
texts = st.one_of(
    json_values.map(json.dumps),
    shaped.map(json.dumps),
    huge_batches.map(json.dumps),
    st.text(max_size=200),
)
frames = st.one_of(texts, texts.map(str.encode), st.binary(max_size=200))


def decoded(frame: str | bytes) -> Any:
    """What the frame is under the protocol: a message, or None when it is not one."""
    if isinstance(frame, bytes):
        return None  # the protocol speaks in text frames only
    try:
        return AGENT_MESSAGE.validate_python(orjson.loads(frame))
    except (orjson.JSONDecodeError, ValidationError):
        return None


@contextmanager
def sync_socket(server: HubServer, token: str) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"}
    with connect_sync(server.ws_url, additional_headers=headers, compression=None) as ws:
        assert orjson.loads(ws.recv(timeout=5))["type"] == "welcome"
        yield ws


def exchange(ws: ClientConnection, frame: str | bytes) -> list[dict[str, Any]]:
    """Send ``frame`` and return every reply to it.

    A marker follows the frame: a message of a made-up type, which the hub refuses by name
    (before ``hello`` too), so the replies are exactly what came before that refusal.
    """
    marker = f"sync-{uuid.uuid4().hex}"
    ws.send(frame)
    ws.send(json.dumps({"type": marker}))
    replies = []
    while (reply := orjson.loads(ws.recv(timeout=5))).get("error") != (
        f"Unknown message type: {marker}"
    ):
        replies.append(reply)
    return replies


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


async def test_random_frames_get_an_error_and_never_a_close(start_server: ServerStarter) -> None:
    async with start_server(**PATIENT) as server:
        people = People(server)
        ann = await people.join("ann@example.com")
        created = await ann.create_agent("target")
        async with agent_socket(server.ws_url, created.token) as first:
            await first.send(HELLO)
            await first.recv_type("hello_ack")
        before = await ann.wait_status(created.agent_id, "offline")

        def fuzz() -> None:
            with sync_socket(server, created.token) as ws:

                @FUZZ
                @given(frame=frames)
                def check(frame: str | bytes) -> None:
                    assume(not isinstance(decoded(frame), Hello))
                    replies = exchange(ws, frame)
                    assert [r["type"] for r in replies] == ["error"], (frame, replies)

                check()
                ws.send(json.dumps(HELLO))
                assert orjson.loads(ws.recv(timeout=5))["type"] == "hello_ack"

                @FUZZ
                @given(frame=frames)
                def check_online(frame: str | bytes) -> None:
                    message = decoded(frame)
                    replies = [r["type"] for r in exchange(ws, frame)]
                    if message is None or isinstance(message, Hello):
                        assert replies == ["error"], (frame, replies)
                    elif isinstance(message, Heartbeat):
                        assert replies == ["heartbeat_ack"], (frame, replies)
                    else:
                        assert replies == [], (frame, replies)

                check_online()

        await asyncio.to_thread(fuzz)

        assert (await server.client.get("/health")).status_code == 200
        after = await ann.agent(created.agent_id)
        for key in ("id", "name", "ownerId", "description", "type", "config"):
            assert after[key] == before[key], key
        assert after["capabilities"] == before["capabilities"]
        assert after["capabilities"]["name"] == "fuzzed"


def log_record(message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "log", "records": [{"message": message, **fields}]}


BAD_BEFORE_HELLO: list[tuple[str | bytes | dict[str, Any] | list[Any], str]] = [
    ({"type": "heartbeat"}, "Send hello first"),
    ({"type": "status", "status": "busy"}, "Send hello first"),
    (log_record("early"), "Send hello first"),
    ("not json", "Invalid message format"),
    ("", "Invalid message format"),
    ("[" * 5000, "Invalid message format"),
    ('{"type": "hello", "name": "x"', "Invalid message format"),
    (b"\x00\xff\xfe", "Invalid message format"),
    (b'{"type": "hello", "name": "binary"}', "Invalid message format"),
    ([], "Invalid message"),
    ("1", "Invalid message"),
    ("null", "Invalid message"),
    ({}, "Invalid message"),
    ({"type": None}, "Invalid message"),
    ({"type": ["hello"]}, "Invalid message"),
    ({"type": {"a": 1}}, "Invalid message"),
    ({"type": "stream_finish", "streamId": "x"}, "Unknown message type: stream_finish"),
    ({"type": "stream_end", "streamId": "x"}, "Invalid message"),
    ({"type": "command_result", "commandId": "x"}, "Invalid message"),
    ({"type": "hello"}, "Invalid message"),
    ({"type": "hello", "name": 7}, "Invalid message"),
    ({"type": "hello", "name": ""}, "Invalid message"),
    ({"type": "hello", "name": "x", "maxConcurrency": "lots"}, "Invalid message"),
    ({"type": "hello", "name": "x", "maxConcurrency": 0}, "Invalid message"),
    ({"type": "hello", "name": "x", "commands": "echo"}, "Invalid message"),
    ({"type": "hello", "name": "x", "surprise": True}, "Invalid message"),
]
BAD_AFTER_HELLO: list[tuple[str | bytes | dict[str, Any], str]] = [
    (HELLO, "Hello was already received on this connection"),
    ({"type": "heartbeat", "health": "great"}, "Invalid message"),
    ({"type": "heartbeat", "metrics": {"commandsHandled": -1}}, "Invalid message"),
    ({"type": "heartbeat", "metrics": []}, "Invalid message"),
    ({"type": "status", "status": "offline"}, "Invalid message"),
    ({"type": "status", "status": "busy", "message": "m" * 501}, "Invalid message"),
    ({"type": "log", "records": "nope"}, "Invalid message"),
    ({"type": "log", "records": []}, "Invalid message"),
    ({"type": "log", "records": [{}]}, "Invalid message"),
    (log_record("x", level="LOUD"), "Invalid message"),
    (log_record("x" * 16_385), "Invalid message"),
    (log_record("x", timestamp="yesterday"), "Invalid message"),
    (log_record("x", timestamp="0001-01-01T00:00:00+14:00"), "Invalid message"),
    (log_record("x", extra=[1]), "Invalid message"),
    ({"type": "log", "records": [{"message": "m"}] * (MAX_LOG_BATCH + 1)}, "Invalid message"),
    ({"type": "task_progress", "taskId": "t", "progress": 1.5}, "Invalid message"),
    ({"type": "task_result", "taskId": "t"}, "Invalid message"),
    ({"type": "task_result", "taskId": "t", "success": True, "attempt": 0}, "Invalid message"),
    ({"type": "stream_chunk", "streamId": "s", "index": -1, "chunk": "x"}, "Invalid message"),
    ({"type": "stream_end", "streamId": "s", "status": "paused"}, "Invalid message"),
    (b'{"type": "heartbeat"}', "Invalid message format"),
    ('{"type": "heartbeat", "pad": "' + "\u20ac" * 400_000 + '"}', "Message too large"),
    ('{"type": "heartbeat", "pad": "' + "x" * (1024 * 1024) + '"}', "Message too large"),
]


async def test_malformed_messages_each_get_their_error(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()

    async with agent_socket(server.ws_url, created.token) as raw:
        for message, error in BAD_BEFORE_HELLO:
            await raw.send(message)
            reply = await raw.recv()
            assert (reply["type"], reply["error"]) == ("error", error), message
        assert (await ann.agent(created.agent_id))["status"] == "offline"
        await raw.send({"type": "hello", "name": 7})
        details = (await raw.recv())["details"]
        assert details == [{"field": "hello.name", "message": "Input should be a valid string"}]

        await raw.hello("proper", commands=["one"])
        for message, error in BAD_AFTER_HELLO:
            await raw.send(message)
            reply = await raw.recv_type("error")
            assert reply["error"] == error, str(message)[:200]
        await raw.heartbeat()

        view = await ann.agent(created.agent_id)
        assert (view["status"], view["health"]) == ("online", "healthy")
        assert view["capabilities"]["name"] == "proper"
        assert view["capabilities"]["commands"] == ["one"]
        assert (await ann.logs(created.agent_id))["total"] == 0  # no bad batch left anything


async def test_status_reports_and_heartbeats_change_what_people_see(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello()
        for status, health, message in [
            ("busy", None, "crunching"),
            ("error", "unhealthy", "disk full"),
            ("online", "degraded", None),
        ]:
            report: dict[str, Any] = {"type": "status", "status": status, "message": message}
            if health is not None:
                report["health"] = health
            await raw.send(report)
            await raw.heartbeat()
            view = await ann.agent(created.agent_id)
            assert (view["status"], view["statusMessage"]) == (status, message)
            assert view["health"] == (health or view["health"])
            status_view = (await ann.call("GET", f"/api/agents/{created.agent_id}/status")).json()
            assert status_view["status"] == status

        await raw.send(
            {
                "type": "heartbeat",
                "health": "healthy",
                "metrics": {"commandsHandled": 7, "tasksFailed": 2, "handlingTimeMean": 0.5},
            }
        )
        await raw.recv_type("heartbeat_ack")
        metrics = (await ann.agent(created.agent_id))["metrics"]
        assert (metrics["commandsHandled"], metrics["tasksFailed"]) == (7, 2)
        assert metrics["handlingTimeMean"] == 0.5
        assert metrics["messagesIn"] >= 6
        assert metrics["messagesOut"] >= 4


# Valid log records the hub must store, on either database, whatever their text and time:
# times without an offset count as UTC, and any offset within the years 1 to 9999 is fine.
ZONES: list[tzinfo | None] = [
    None,
    UTC,
    timezone(timedelta(hours=14)),
    timezone(-timedelta(hours=12)),
]
OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "level": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
    "logger": st.text(max_size=20),
    "timestamp": st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(ZONES),
    ).map(datetime.isoformat),
    "extra": st.dictionaries(st.text(max_size=10), finite_json, max_size=3),
}
valid_records = st.fixed_dictionaries({"message": st.text(max_size=50)}, optional=OPTIONAL_FIELDS)


def stored_form(record: dict[str, Any]) -> tuple[str, datetime | None]:
    """What the hub keeps of ``record``: NUL (which PostgreSQL cannot hold) reads as U+FFFD."""
    moment = record.get("timestamp")
    when = datetime.fromisoformat(moment) if moment else None
    if when is not None:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return record["message"].replace("\x00", "\ufffd"), when


async def test_any_valid_log_batch_is_stored(start_server: ServerStarter) -> None:
    async with start_server(**PATIENT) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent()
        sent: list[dict[str, Any]] = []

        def fuzz() -> None:
            with sync_socket(server, created.token) as ws:
                ws.send(json.dumps(HELLO))
                assert orjson.loads(ws.recv(timeout=5))["type"] == "hello_ack"

                @settings(FUZZ, max_examples=100)
                @given(records=st.lists(valid_records, min_size=1, max_size=5))
                def check(records: list[dict[str, Any]]) -> None:
                    replies = exchange(ws, json.dumps({"type": "log", "records": records}))
                    assert replies == [], (records, replies)
                    sent.extend(records)

                check()

        await asyncio.to_thread(fuzz)

        page = await ann.logs(created.agent_id, limit=1000)
        assert page["total"] == len(sent)
        stored = [(r["message"], datetime.fromisoformat(r["timestamp"])) for r in page["logs"]]
        assert sorted(m for m, _ in stored) == sorted(stored_form(r)[0] for r in sent)
        timed = [stored_form(r) for r in sent if r.get("timestamp")]
        assert timed
        assert all(pair in stored for pair in timed)
