"""Prompt streams: the demo agent (a real process) answering over Server-Sent Events and the
client WebSocket, resumed, replayed, cancelled, cut off and expired; raw agents breaking the
protocol; two nodes on Redis; and the OpenAI-compatible agent against a local endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from kai.db import utcnow
from kai.work.models import Stream
from tests.agents.conftest import ServerStarter
from tests.agents.processes import Launcher, child_env, run_cli
from tests.agents.support import HubServer, People, Person, RawAgent, agent_socket, eventually
from tests.clock import FakeClock
from tests.helpers import bearer
from tests.realtime.client_support import PUBLIC_URL, Hubs, watch
from tests.work.openai_upstream import (
    FAIL,
    FAILURE,
    GARBLE,
    LINGER,
    MODEL,
    openai_upstream,
    reply_to,
)
from tests.work.stream_support import (
    answer_of,
    check_seq,
    demo_answer,
    no_more_chunks,
    open_stream,
    read_sse,
    spawn_with_env,
    stored_chunks,
    stream_chunks,
)
from tests.work.support import DEMO, kept_alive, payload

SLOW = {"delay": 0.2}  # the demo agent waits this long before each word
LONG_PROMPT = " ".join(f"word{i}" for i in range(60))


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def info(person: Person, stream_id: str) -> dict[str, Any]:
    response = await person.call("GET", f"/api/streams/{stream_id}")
    assert response.status_code == 200, response.text
    return payload(response)


async def cancel(person: Person, stream_id: str) -> httpx.Response:
    return await person.call("POST", f"/api/streams/{stream_id}/cancel")


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return payload(response)


def chunk(stream_id: str, index: int, text: str) -> dict[str, Any]:
    return {"type": "stream_chunk", "streamId": stream_id, "index": index, "chunk": text}


def end(stream_id: str, status: str = "completed", **fields: Any) -> dict[str, Any]:
    return {"type": "stream_end", "streamId": stream_id, "status": status, **fields}


async def online_demo(people: People, launcher: Launcher) -> tuple[Person, str]:
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("demo")
    process = launcher.start(created.token, target=DEMO)
    await ann.wait_status(created.agent_id, "online", 20, process=process)
    return ann, created.agent_id


@asynccontextmanager
async def begun_stream(
    server: HubServer, person: Person
) -> AsyncIterator[tuple[RawAgent, dict[str, Any]]]:
    """A raw agent of ``person``, online and kept alive, and a stream whose prompt it got."""
    created = await person.create_agent("writer")
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello("writer", streaming=True)
        async with kept_alive(raw):
            await person.wait_status(created.agent_id, "online")
            response = await open_stream(person, created.agent_id, {"prompt": "Write"})
            assert response.status_code == 200, response.text
            opened = payload(response)
            assert (await raw.recv_type("prompt"))["streamId"] == opened["streamId"]
            yield raw, opened


async def written_stream(server: HubServer, person: Person, text: list[str]) -> dict[str, Any]:
    """A stream a raw agent of ``person`` wrote ``text`` into and ended."""
    async with begun_stream(server, person) as (raw, opened):
        for index, piece in enumerate(text):
            await raw.send(chunk(opened["streamId"], index, piece))
        await raw.send(end(opened["streamId"], chunks=len(text)))
        await raw.heartbeat()
    return opened


# -- the demo agent --------------------------------------------------------------------------------


async def test_the_demo_agents_answer_arrives_alike_over_sse_and_the_client_socket_and_replays(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann, agent_id = await online_demo(people, launcher)
    expected = demo_answer("how are you")
    count = len(expected)

    async with watch(server, agent_id, ann.token) as watcher:
        assert (await watcher.recv())["type"] == "status_update"
        response = await open_stream(
            ann,
            agent_id,
            {
                "prompt": "how are you",
                "context": {"conversation": "c-1"},
                "options": {"delay": 0.05},
            },
        )
        assert response.status_code == 200, response.text
        opened = payload(response)
        stream_id = opened["streamId"]
        url = opened["streamUrl"]
        assert opened == {
            "success": True,
            "streamId": stream_id,
            "streamUrl": f"http://hub.test/api/streams/{stream_id}/events",
            "expiresAt": opened["expiresAt"],
            "status": "pending",
        }
        live = asyncio.create_task(read_sse(ann, url))
        chunk_events, last = await stream_chunks(watcher, stream_id)
        events = await live
    check_seq(watcher.received)

    # The client socket: one event per chunk, then the end with the count as its index.
    assert [e["chunk"] for e in chunk_events] == expected
    assert [e["index"] for e in chunk_events] == list(range(count))
    assert all(e["done"] is False and set(e) >= {"seq", "epoch"} for e in chunk_events)
    assert last is not None
    assert (last["done"], last["status"], last["index"], last["chunk"]) == (
        True,
        "completed",
        count,
        "",
    )
    assert "error" not in last
    # Server-Sent Events: the same chunks, each with its index as its id, then the end.
    chunks, ended = answer_of(events)
    assert chunks == expected
    assert ended == {"streamId": stream_id, "status": "completed", "chunks": count}

    state = await info(ann, stream_id)
    assert state == {
        "streamId": stream_id,
        "agentId": agent_id,
        "status": "completed",
        "chunks": count,
        "error": None,
        "createdAt": state["createdAt"],
        "completedAt": state["completedAt"],
        "expiresAt": opened["expiresAt"],
    }
    created_at = when(state["createdAt"])
    assert created_at <= when(state["completedAt"])
    assert when(state["expiresAt"]) - created_at == timedelta(seconds=server.settings.stream_ttl)
    assert await stored_chunks(server.hub, stream_id) == list(enumerate(expected))

    # Replayed in full once it has ended, as often as asked.
    assert answer_of(await read_sse(ann, url)) == (expected, ended)
    # Resumed after the last chunk a client saw, or from a chunk of its choice.
    resumed = await read_sse(ann, url, headers={"Last-Event-ID": "3"})
    assert answer_of(resumed, start=4) == (expected[4:], ended)
    assert answer_of(await read_sse(ann, url, params={"from": 5}), start=5) == (expected[5:], ended)
    # A browser reconnects to the same URL with Last-Event-ID: that wins over ?from.
    both = await read_sse(ann, url, headers={"Last-Event-ID": "6"}, params={"from": 1})
    assert answer_of(both, start=7) == (expected[7:], ended)
    assert answer_of(await read_sse(ann, url, headers={"Last-Event-ID": "-1"})) == (expected, ended)
    # From the end (or past it): only the end.
    assert answer_of(await read_sse(ann, url, params={"from": count}), start=count) == ([], ended)
    for bad in ({"params": {"from": -1}}, {"params": {"from": "x"}}):
        response = await ann.call("GET", f"/api/streams/{stream_id}/events", **bad)
        problem(response, 422)
    response = await server.client.get(
        f"/api/streams/{stream_id}/events", headers={**bearer(ann.token), "Last-Event-ID": "later"}
    )
    problem(response, 422)


async def test_a_stream_ends_cancelled_when_asked_failed_when_its_agent_dies(
    server: HubServer, people: People, launcher: Launcher
) -> None:
    ann, agent_id = await online_demo(people, launcher)
    async with watch(server, agent_id, ann.token) as watcher:
        assert (await watcher.recv())["type"] == "status_update"

        # Cancelled after two chunks: the end comes at once, the agent's generator stops.
        response = await open_stream(ann, agent_id, {"prompt": LONG_PROMPT, "options": SLOW})
        assert response.status_code == 200, response.text
        opened = payload(response)
        stream_id, url = opened["streamId"], opened["streamUrl"]
        reader = asyncio.create_task(read_sse(ann, url))
        first, _ = await stream_chunks(watcher, stream_id, count=2)
        response = await cancel(ann, stream_id)
        assert response.status_code == 200, response.text
        assert payload(response) == {
            "success": True,
            "streamId": stream_id,
            "status": "cancelled",
            "previousStatus": "running",
        }
        rest, last = await stream_chunks(watcher, stream_id)
        seen = [e["chunk"] for e in first + rest]
        assert seen == demo_answer(LONG_PROMPT)[: len(seen)]
        assert last is not None
        assert (last["done"], last["status"]) == (True, "cancelled")

        again = problem(await cancel(ann, stream_id), 409)
        assert again["detail"] == "Stream already cancelled"
        assert again["currentStatus"] == "cancelled"

        # The agent's own end arrives (its count is that of the chunks relayed); nothing after.
        async def agent_ended() -> dict[str, Any] | None:
            state = await info(ann, stream_id)
            return state if state["chunks"] == len(seen) else None

        state = await eventually(agent_ended, 10, what="the agent's end of the stream")
        assert (state["status"], state["error"]) == ("cancelled", None)
        assert state["completedAt"] is not None
        await no_more_chunks(watcher, 3 * SLOW["delay"])
        assert await stored_chunks(server.hub, stream_id) == list(enumerate(seen))
        chunks, ended = answer_of(await reader)
        assert chunks == seen
        assert ended == {"streamId": stream_id, "status": "cancelled", "chunks": len(seen)}
        assert answer_of(await read_sse(ann, url)) == (seen, ended)

        # The agent dies mid-stream: the stream ends failed.
        response = await open_stream(ann, agent_id, {"prompt": LONG_PROMPT, "options": SLOW})
        assert response.status_code == 200, response.text
        cut = payload(response)["streamId"]
        first, _ = await stream_chunks(watcher, cut, count=2)
        launcher.kill_all()
        rest, last = await stream_chunks(watcher, cut)
        seen = [e["chunk"] for e in first + rest]
        assert last is not None
        assert (last["done"], last["status"], last["index"], last["error"]) == (
            True,
            "failed",
            len(seen),
            "Agent disconnected",
        )
    state = await info(ann, cut)
    assert (state["status"], state["chunks"], state["error"]) == (
        "failed",
        len(seen),
        "Agent disconnected",
    )
    assert await stored_chunks(server.hub, cut) == list(enumerate(seen))
    chunks, ended = answer_of(await read_sse(ann, payload(response)["streamUrl"]))
    assert chunks == seen
    assert ended == {
        "streamId": cut,
        "status": "failed",
        "chunks": len(seen),
        "error": "Agent disconnected",
    }
    assert problem(await cancel(ann, cut), 409)["detail"] == "Stream already failed"

    # No agent, no stream.
    await ann.wait_status(agent_id, "offline")
    refused = problem(await open_stream(ann, agent_id, {"prompt": "anyone?"}), 409)
    assert refused["detail"] == "Agent is not connected"


# -- raw agents ------------------------------------------------------------------------------------


async def test_raw_agents_stream_in_order_into_their_own_streams_only(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    quiet = await ann.create_agent("quiet")
    writer = await ann.create_agent("writer")
    intruder = await bob.create_agent("intruder")

    refused = problem(await open_stream(ann, writer.agent_id, {"prompt": "hi"}), 409)
    assert refused["detail"] == "Agent is not connected"
    async with agent_socket(server.ws_url, quiet.token) as raw:
        await raw.hello("quiet", commands=["echo"])  # no "streaming": it does not take prompts
        async with kept_alive(raw):
            await ann.wait_status(quiet.agent_id, "online")
            refused = problem(await open_stream(ann, quiet.agent_id, {"prompt": "hi"}), 400)
            assert refused["detail"] == "Agent does not take prompt streams"

    async with (
        agent_socket(server.ws_url, writer.token) as raw,
        agent_socket(server.ws_url, intruder.token) as other,
    ):
        await raw.hello("writer", streaming=True)
        await other.hello("intruder", streaming=True)
        async with kept_alive(raw), kept_alive(other):
            await ann.wait_status(writer.agent_id, "online")
            await bob.wait_status(intruder.agent_id, "online")

            body = {"prompt": "Write", "context": {"conversation": "c-1"}, "options": {"n": 2}}
            response = await open_stream(ann, writer.agent_id, body)
            assert response.status_code == 200, response.text
            opened = payload(response)
            stream_id = opened["streamId"]
            assert await raw.recv_type("prompt") == {
                "type": "prompt",
                "streamId": stream_id,
                **body,
            }

            async def refusal(agent: RawAgent, message: dict[str, Any]) -> str:
                await agent.send(message)
                error: dict[str, Any] = await agent.recv_type("error")
                assert error["streamId"] == message["streamId"], error
                return str(error["error"])

            # Another agent may not write into the stream, before or after its own agent began.
            assert await refusal(other, chunk(stream_id, 0, "mine")) == "Unknown stream"
            assert (
                await refusal(raw, chunk(stream_id, 1, "b"))
                == "Chunk out of order: expected index 0"
            )
            await raw.send(chunk(stream_id, 0, "a"))
            await raw.send(chunk(stream_id, 1, "b"))
            assert (
                await refusal(raw, chunk(stream_id, 1, "b"))
                == "Chunk out of order: expected index 2"
            )
            assert (
                await refusal(raw, chunk(stream_id, 3, "d"))
                == "Chunk out of order: expected index 2"
            )
            assert await refusal(other, chunk(stream_id, 2, "mine")) == "Unknown stream"
            assert await refusal(other, end(stream_id, chunks=2)) == "Unknown stream"
            assert await refusal(raw, chunk("no-such-stream", 0, "x")) == "Unknown stream"
            assert await refusal(raw, end("no-such-stream")) == "Unknown stream"
            await raw.send(chunk(stream_id, 2, "c ✓\n"))
            await raw.heartbeat()
            assert (await info(ann, stream_id))["status"] == "running"
            await raw.send(end(stream_id, chunks=3))
            await raw.heartbeat()
            sent = ["a", "b", "c ✓\n"]
            state = await info(ann, stream_id)
            assert (state["status"], state["chunks"], state["error"]) == ("completed", 3, None)
            assert await stored_chunks(server.hub, stream_id) == list(enumerate(sent))
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert chunks == sent
            assert ended == {"streamId": stream_id, "status": "completed", "chunks": 3}
            # An ended stream takes nothing more.
            assert await refusal(raw, chunk(stream_id, 3, "late")) == "Unknown stream"
            assert await refusal(raw, end(stream_id)) == "Unknown stream"
            assert (
                problem(await cancel(ann, stream_id), 409)["detail"] == "Stream already completed"
            )

            # The agent's failure ends the stream failed, with its words.
            response = await open_stream(ann, writer.agent_id, {"prompt": "Try"})
            failed = payload(response)
            assert (await raw.recv_type("prompt"))["streamId"] == failed["streamId"]
            await raw.send(chunk(failed["streamId"], 0, "partial"))
            await raw.send(end(failed["streamId"], "failed", chunks=1, error="model crashed"))
            await raw.heartbeat()
            chunks, ended = answer_of(await read_sse(ann, failed["streamUrl"]))
            assert chunks == ["partial"]
            assert ended == {
                "streamId": failed["streamId"],
                "status": "failed",
                "chunks": 1,
                "error": "model crashed",
            }

            # A stream the agent has not begun when it leaves ends failed too.
            response = await open_stream(ann, writer.agent_id, {"prompt": "Wait"})
            waiting = payload(response)
            assert (await raw.recv_type("prompt"))["streamId"] == waiting["streamId"]

    async def ended_on_leaving() -> dict[str, Any] | None:
        state = await info(ann, waiting["streamId"])
        return state if state["status"] != "pending" else None

    state = await eventually(ended_on_leaving, what="the end of the waiting stream")
    assert (state["status"], state["chunks"], state["error"]) == (
        "failed",
        0,
        "Agent disconnected",
    )
    assert answer_of(await read_sse(ann, waiting["streamUrl"])) == (
        [],
        {
            "streamId": waiting["streamId"],
            "status": "failed",
            "chunks": 0,
            "error": "Agent disconnected",
        },
    )

    # Someone else's stream, or none at all: 404 whatever is asked.
    for person, sid in ((bob, stream_id), (ann, "no-such-stream")):
        for method, path in (
            ("GET", f"/api/streams/{sid}"),
            ("GET", f"/api/streams/{sid}/events"),
            ("POST", f"/api/streams/{sid}/cancel"),
        ):
            assert problem(await person.call(method, path), 404)["detail"] == "Stream not found"
    assert problem(await open_stream(bob, writer.agent_id, {"prompt": "hi"}), 404)
    response = await server.client.get(f"/api/streams/{stream_id}")
    assert response.status_code == 401, response.text


async def test_who_may_open_a_stream_and_with_what_body(server: HubServer, people: People) -> None:
    ann = await people.join("ann@example.com")
    robot = await people.join("robot@example.com", role="agent")
    created = await ann.create_agent("writer")
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello("writer", streaming=True)
        async with kept_alive(raw):
            await ann.wait_status(created.agent_id, "online")
            denied = problem(await open_stream(robot, created.agent_id, {"prompt": "hi"}), 403)
            assert denied["detail"] == "Insufficient permissions: agents:command"
            bad_bodies: list[Any] = [
                {},
                {"prompt": ""},
                {"prompt": 5},
                {"prompt": "hi", "context": ["a"]},
                {"prompt": "hi", "options": "fast"},
                {"prompt": "hi", "extra": True},
                ["hi"],
            ]
            for body in bad_bodies:
                response = await open_stream(ann, created.agent_id, body)
                assert response.status_code == 422, (body, response.text)
            await raw.heartbeat()  # no prompt reached the agent: the next message is an ack


async def test_a_running_streams_state_counts_the_chunks_stored_so_far(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    async with begun_stream(server, ann) as (raw, opened):
        for index in range(3):
            await raw.send(chunk(opened["streamId"], index, f"piece {index}"))
        await raw.heartbeat()

        async def stored() -> bool:
            return len(await stored_chunks(server.hub, opened["streamId"])) == 3

        await eventually(stored, what="the chunks' rows")
        state = await info(ann, opened["streamId"])
        assert (state["status"], state["chunks"]) == ("running", 3)


async def test_a_cancelled_stream_ends_with_the_count_of_its_chunks(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    async with begun_stream(server, ann) as (raw, opened):
        stream_id = opened["streamId"]
        async with watch(server, (await info(ann, stream_id))["agentId"], ann.token) as watcher:
            assert (await watcher.recv())["type"] == "status_update"
            for index in range(2):
                await raw.send(chunk(stream_id, index, f"piece {index}"))
            await raw.heartbeat()
            response = await cancel(ann, stream_id)
            assert response.status_code == 200, response.text
            assert await raw.recv_type("cancel") == {"type": "cancel", "id": stream_id}
            chunks, last = await stream_chunks(watcher, stream_id)
        assert [c["chunk"] for c in chunks] == ["piece 0", "piece 1"]
        assert last is not None
        assert (last["status"], last["index"]) == ("cancelled", 2)
        assert (await info(ann, stream_id))["chunks"] == 2


async def test_a_stream_cancelled_before_its_chunks_were_written_replays_them(
    start_server: ServerStarter,
) -> None:
    # Chunks are written every 30 s here: those before the cancel are still in memory.
    async with start_server(stream_flush_interval=30.0) as server:
        ann = await People(server).join("ann@example.com")
        async with begun_stream(server, ann) as (raw, opened):
            await raw.send(chunk(opened["streamId"], 0, "a"))
            await raw.send(chunk(opened["streamId"], 1, "b"))
            await raw.heartbeat()
            response = await cancel(ann, opened["streamId"])
            assert response.status_code == 200, response.text
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert (chunks, ended["chunks"]) == (["a", "b"], 2)


async def test_an_agent_may_end_a_stream_cancelled_before_it_began(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    async with begun_stream(server, ann) as (raw, opened):
        response = await cancel(ann, opened["streamId"])
        assert response.status_code == 200, response.text
        assert await raw.recv_type("cancel") == {"type": "cancel", "id": opened["streamId"]}
        await raw.send(end(opened["streamId"], "cancelled", chunks=0))
        await raw.heartbeat()  # the next message is the ack: no error came before it


# -- expiry ----------------------------------------------------------------------------------------


async def expire(server: HubServer, stream_id: str) -> None:
    """Move the stream's expiry a second into the past (the clock is at the edge of the world)."""
    async with server.hub.db.session() as session:
        await session.execute(
            update(Stream)
            .where(Stream.id == stream_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_a_stream_reads_back_until_it_expires_then_is_gone(
    start_server: ServerStarter,
) -> None:
    ttl = 7200.0
    async with start_server(stream_ttl=ttl, public_base_url=None) as server:
        people = People(server)
        ann = await people.join("ann@example.com")
        bob = await people.join("bob@example.com")
        opened = await written_stream(server, ann, ["one", " two"])
        stream_id = opened["streamId"]
        state = await info(ann, stream_id)
        assert when(state["expiresAt"]) - when(state["createdAt"]) == timedelta(seconds=ttl)
        # Without a public base URL, the stream's URL is the one the client called.
        assert opened["streamUrl"] == f"{server.base_url}/api/streams/{stream_id}/events"
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(opened["streamUrl"], headers=bearer(ann.token))
        assert response.status_code == 200, response.text
        assert response.text == (
            f'id: 0\nevent: chunk\ndata: {{"streamId":"{stream_id}","index":0,"chunk":"one"}}\n\n'
            f'id: 1\nevent: chunk\ndata: {{"streamId":"{stream_id}","index":1,"chunk":" two"}}\n\n'
            f'event: end\ndata: {{"streamId":"{stream_id}","status":"completed","chunks":2}}\n\n'
        )

        await expire(server, stream_id)
        for method, path in (
            ("GET", f"/api/streams/{stream_id}"),
            ("GET", f"/api/streams/{stream_id}/events"),
            ("POST", f"/api/streams/{stream_id}/cancel"),
        ):
            gone = problem(await ann.call(method, path), 410)
            assert gone["detail"] == "Stream expired"
            assert when(gone["expiresAt"]) < utcnow()
            # Someone else still learns nothing of it.
            assert problem(await bob.call(method, path), 404)["detail"] == "Stream not found"


async def test_an_expired_stream_stays_gone_after_the_expiry_loop_ran(
    start_server: ServerStarter,
) -> None:
    clock = FakeClock()  # the stream expires when the test moves the clock on
    async with start_server(stream_ttl=60, clock=clock) as server:
        ann = await People(server).join("ann@example.com")
        opened = await written_stream(server, ann, ["one"])
        assert await stored_chunks(server.hub, opened["streamId"])
        clock.advance(61)
        await server.hub.streams.prune()  # what the expiry loop runs
        assert not await stored_chunks(server.hub, opened["streamId"])
        assert await server.hub.streams.state(opened["streamId"]) is not None
        response = await ann.call("GET", f"/api/streams/{opened['streamId']}")
        assert response.status_code == 410, response.text
        response = await ann.call("GET", f"/api/streams/{opened['streamId']}/events")
        assert response.status_code == 410, response.text


async def test_a_resume_past_the_end_reports_the_streams_own_count(
    server: HubServer, people: People
) -> None:
    ann = await people.join("ann@example.com")
    opened = await written_stream(server, ann, ["one", " two"])
    events = await read_sse(ann, opened["streamUrl"], params={"from": 5})
    assert answer_of(events, start=5) == (
        [],
        {"streamId": opened["streamId"], "status": "completed", "chunks": 2},
    )


# -- two nodes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_stream_of_an_agent_on_one_node_reads_and_cancels_from_another(
    hubs: Hubs, tmp_path: Path
) -> None:
    near, far = await hubs.pair()
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("demo")
    agent_id = created.agent_id
    launcher = Launcher(near.ws_url, tmp_path)
    try:
        process = launcher.start(created.token, target=DEMO)
        await ann.wait_status(agent_id, "online", 20, process=process)
        assert near.hub.live.get(agent_id) is not None
        assert far.hub.live.get(agent_id) is None
        expected = demo_answer("across nodes")

        async with watch(far, agent_id, ann.token) as watcher:
            assert (await watcher.recv())["type"] == "status_update"
            response = await open_stream(
                ann, agent_id, {"prompt": "across nodes", "options": {"delay": 0.05}}
            )
            assert response.status_code == 200, response.text
            opened = payload(response)
            assert opened["streamUrl"] == f"{PUBLIC_URL}/api/streams/{opened['streamId']}/events"
            live = asyncio.create_task(read_sse(ann, opened["streamUrl"]))
            chunk_events, last = await stream_chunks(watcher, opened["streamId"])
            chunks, ended = answer_of(await live)
            assert chunks == expected
            assert [e["chunk"] for e in chunk_events] == expected
            assert last is not None
            assert (last["status"], last["index"]) == ("completed", len(expected))
            assert ended == {
                "streamId": opened["streamId"],
                "status": "completed",
                "chunks": len(expected),
            }
            assert await stored_chunks(far.hub, opened["streamId"]) == list(enumerate(expected))

            # Cancelled from the far node: the agent on the near one stops.
            response = await open_stream(ann, agent_id, {"prompt": LONG_PROMPT, "options": SLOW})
            slow = payload(response)
            first, _ = await stream_chunks(watcher, slow["streamId"], count=2)
            response = await cancel(ann, slow["streamId"])
            assert response.status_code == 200, response.text
            rest, last = await stream_chunks(watcher, slow["streamId"])
            assert last is not None
            assert last["status"] == "cancelled"
            seen = [e["chunk"] for e in first + rest]

            async def agent_ended() -> bool:
                state = await info(ann, slow["streamId"])
                return bool(state["chunks"] == len(seen))

            await eventually(agent_ended, 10, what="the agent's end of the stream")
            await no_more_chunks(watcher, 3 * SLOW["delay"])
        chunks, ended = answer_of(await read_sse(ann, slow["streamUrl"]))
        assert chunks == seen
        assert ended == {"streamId": slow["streamId"], "status": "cancelled", "chunks": len(seen)}
    finally:
        launcher.kill_all()


# -- the OpenAI-compatible agent -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedded"])
async def test_the_openai_agent_streams_an_openai_compatible_endpoints_answer(
    hubs: Hubs, tmp_path: Path
) -> None:
    server = await hubs.start()
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent("openai")
    system = "You are terse."
    async with openai_upstream() as upstream:
        process = spawn_with_env(
            tmp_path / "openai.log",
            created.token,
            server.ws_url,
            target="kai.openai_agent:agent",
            env=upstream.environment(KAI_OPENAI_SYSTEM_PROMPT=system),
        )
        try:
            view = await ann.wait_status(created.agent_id, "online", 20, process=process)
            capabilities = view["capabilities"]
            assert (capabilities["name"], capabilities["streaming"]) == ("openai", True)
            assert capabilities["maxConcurrency"] == 8

            history = [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
            ]
            options = {"temperature": 0.2, "max_tokens": 64, "top_p": 0.9, "delay": 1}
            body = {
                "prompt": "Tell me a joke",
                "context": {"messages": history, "conversation": "c-9"},
                "options": {**options, "model": "something-else"},
            }
            response = await open_stream(ann, created.agent_id, body)
            assert response.status_code == 200, response.text
            opened = payload(response)
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert chunks == reply_to("Tell me a joke")
            assert ended == {
                "streamId": opened["streamId"],
                "status": "completed",
                "chunks": len(chunks),
            }
            [request] = upstream.requests
            assert request.authorization == f"Bearer {upstream.environment()['KAI_OPENAI_API_KEY']}"
            assert request.content_type == "application/json"
            assert request.body == {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": system},
                    *history,
                    {"role": "user", "content": "Tell me a joke"},
                ],
                "stream": True,
                "temperature": 0.2,
                "max_tokens": 64,
                "top_p": 0.9,
            }

            # The endpoint refuses: the stream fails with its status; its words and address
            # go to the agent's own log, not to the stream's readers.
            response = await open_stream(ann, created.agent_id, {"prompt": FAIL})
            opened = payload(response)
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert (chunks, ended["status"]) == ([], "failed")
            assert ended["error"] == "the model endpoint answered HTTP 500"
            assert (await info(ann, opened["streamId"]))["error"] == ended["error"]

            async def logged() -> bool:
                records = (await ann.logs(created.agent_id, limit=1000))["logs"]
                return any(FAILURE in r["message"] for r in records)

            await eventually(logged, 10, what="the endpoint's words in the agent's own log")

            # The answer breaks off into something that is not JSON: failed, after what came.
            response = await open_stream(ann, created.agent_id, {"prompt": GARBLE})
            opened = payload(response)
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert (chunks, ended["status"], ended["chunks"]) == (["Half"], "failed", 1)
            assert ended["error"] == "malformed stream event from the model endpoint"

            # A conversation that is not one: failed before asking the endpoint.
            response = await open_stream(
                ann, created.agent_id, {"prompt": "Hi", "context": {"messages": "Hello"}}
            )
            opened = payload(response)
            chunks, ended = answer_of(await read_sse(ann, opened["streamUrl"]))
            assert (chunks, ended["status"]) == ([], "failed")
            assert ended["error"].startswith("context.messages must be a list")
            assert len(upstream.requests) == 3

            # Cancelled: the agent hangs up on the endpoint.
            async with watch(server, created.agent_id, ann.token) as watcher:
                response = await open_stream(ann, created.agent_id, {"prompt": LINGER})
                opened = payload(response)
                first, _ = await stream_chunks(watcher, opened["streamId"], count=2)
                assert [e["chunk"] for e in first] == ["0 ", "1 "]
                response = await cancel(ann, opened["streamId"])
                assert response.status_code == 200, response.text

            async def hung_up() -> bool:
                return upstream.abandoned == [LINGER]

            await eventually(hung_up, 10, what="the agent hanging up on the endpoint")
        finally:
            process.kill()


async def test_the_openai_agent_will_not_start_without_an_endpoint_and_a_model() -> None:
    args = ("agent", "run", "kai.openai_agent:agent", "--url", "ws://127.0.0.1:9")
    neither, no_model = await asyncio.gather(
        run_cli(*args, env=child_env(KAI_AGENT_TOKEN="t")),
        run_cli(
            *args,
            env=child_env(KAI_AGENT_TOKEN="t", KAI_OPENAI_BASE_URL="http://127.0.0.1:11434/v1"),
        ),
    )
    assert neither.returncode == 1, neither.stderr
    assert "KAI_OPENAI_BASE_URL and KAI_OPENAI_MODEL must be set" in neither.stderr
    assert no_model.returncode == 1, no_model.stderr
    assert "KAI_OPENAI_MODEL must be set" in no_model.stderr
    assert "KAI_OPENAI_BASE_URL" not in no_model.stderr.split("must be set")[0]


async def test_the_openai_agent_refuses_credentials_in_its_base_url() -> None:
    """A key in the URL is refused, never sent as the API key nor shown in a message."""
    env = child_env(
        KAI_AGENT_TOKEN="t",
        KAI_OPENAI_BASE_URL="http://someone:sk-in-the-url-0123@127.0.0.1:9/v1",
        KAI_OPENAI_MODEL="m",
        KAI_OPENAI_API_KEY="sk-the-real-key-0123",
    )
    answer = await run_cli(
        "agent", "run", "kai.openai_agent:agent", "--url", "ws://127.0.0.1:9", env=env
    )
    assert answer.returncode == 1, answer.stderr
    assert "KAI_OPENAI_BASE_URL must not hold credentials" in answer.stderr
    assert "sk-in-the-url" not in answer.stderr + answer.stdout
