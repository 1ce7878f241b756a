"""Resuming on ``/ws/agents/{agentId}``: exactly the missed events, or ``resync_required``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as redis

from tests.agents.support import HubServer, People, RawAgent, agent_socket
from tests.realtime import client_support as support
from tests.realtime.client_support import Hubs, check_sequence, log, watch

# The fixtures these tests use, by name.
mode = support.mode
hubs = support.hubs
backing = support.backing
shared_redis_url = support.shared_redis_url


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["entry"]["message"].strip() for e in events]


def check_resync(message: dict[str, Any], agent_id: str, *, head: int, reason: str) -> None:
    assert message["type"] == "resync_required", message
    assert message["agentId"] == agent_id
    assert message["seq"] == head
    assert message["reason"] == reason
    status = message["status"]
    assert status["type"] == "status_update"
    assert (status["agentId"], status["seq"], status["epoch"]) == (
        agent_id,
        head,
        message["epoch"],
    )
    assert status["status"] in {"online", "offline"}
    assert status["timestamp"].endswith("Z")


async def watched_agent(server: HubServer) -> tuple[str, str, str]:
    """A user and an agent of theirs: (user token, agent id, agent token)."""
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    return ann.token, created.agent_id, created.token


async def test_reconnecting_with_since_gets_exactly_the_missed_events_then_live_ones(
    hubs: Hubs,
) -> None:
    server = await hubs.start()
    token, agent_id, agent_token = await watched_agent(server)

    async with agent_socket(server.ws_url, agent_token) as agent:
        async with watch(server, agent_id, token) as first:
            snapshot = await first.recv()
            epoch = snapshot["epoch"]
            await agent.hello()
            await log(agent, 4)
            seen = await first.take(5)
            check_sequence(seen, after=snapshot["seq"], epoch=epoch)
        last = seen[-1]["seq"]

        await log(agent, 6, start=4)  # missed while away

        for with_epoch in (True, False):  # the epoch is optional
            asked = epoch if with_epoch else None
            async with watch(server, agent_id, token, since=last, epoch=asked) as again:
                head = await again.recv()
                assert head["type"] == "status_update"
                assert head["snapshot"] is True
                assert (head["seq"], head["epoch"], head["status"]) == (last, epoch, "online")
                missed = await again.take(6)
                check_sequence(missed, after=last, epoch=epoch)
                assert messages(missed) == [f"rec {i}" for i in range(4, 10)]
                await again.quiet()
                await log(agent, 2, start=100)  # live ones follow, numbered on
                live = await again.take(2)
                check_sequence(live, after=last + 6, epoch=epoch)
                await again.quiet()
            last = live[-1]["seq"]
            await log(agent, 6, start=4)  # the next round misses these

        # Asking from the head replays nothing and goes on live.
        async with watch(server, agent_id, token, since=last + 6, epoch=epoch) as current:
            assert (await current.recv())["seq"] == last + 6
            await current.quiet()


async def test_a_resume_message_on_an_open_socket_replays_from_its_seq(hubs: Hubs) -> None:
    server = await hubs.start()
    token, agent_id, agent_token = await watched_agent(server)

    async with agent_socket(server.ws_url, agent_token) as agent:
        await agent.hello()
        async with watch(server, agent_id, token) as watcher:
            snapshot = await watcher.recv()
            epoch, since = snapshot["epoch"], snapshot["seq"]
            await log(agent, 3)
            check_sequence(await watcher.take(3), after=since, epoch=epoch)

            await watcher.send({"type": "resume", "since": since, "epoch": epoch})
            head = await watcher.recv()
            assert (head["type"], head["snapshot"], head["seq"]) == ("status_update", True, since)
            again = await watcher.take(3)
            check_sequence(again, after=since, epoch=epoch)
            assert messages(again) == ["rec 0", "rec 1", "rec 2"]
            await watcher.quiet()
            await log(agent, 1, start=3)
            check_sequence(await watcher.take(1), after=since + 3, epoch=epoch)

            # A resume from the newest event is a no-op but for the snapshot.
            await watcher.send({"type": "resume", "since": since + 4})
            assert (await watcher.recv())["seq"] == since + 4
            await watcher.quiet()

            # Out of reach: resync_required, and the socket goes on from the head.
            await watcher.send({"type": "resume", "since": since + 50, "epoch": epoch})
            check_resync(
                await watcher.recv(),
                agent_id,
                head=since + 4,
                reason="Events after that seq are no longer held",
            )
            await watcher.send({"type": "resume", "since": 0, "epoch": "another-epoch"})
            check_resync(
                await watcher.recv(), agent_id, head=since + 4, reason="The event log was restarted"
            )
            await log(agent, 1, start=4)
            check_sequence(await watcher.take(1), after=since + 4, epoch=epoch)
            await watcher.heartbeat()


async def test_since_older_than_the_window_or_another_epoch_needs_a_resync(hubs: Hubs) -> None:
    server = await hubs.start(event_window_count=5)
    token, agent_id, agent_token = await watched_agent(server)

    async with agent_socket(server.ws_url, agent_token) as agent:
        await agent.hello()
        async with watch(server, agent_id, token) as watcher:
            snapshot = await watcher.recv()
            epoch, start = snapshot["epoch"], snapshot["seq"]
            await log(agent, 10)
            check_sequence(await watcher.take(10), after=start, epoch=epoch)
        head = start + 10

        # The last five are held: a watcher five behind gets them all.
        async with watch(server, agent_id, token, since=head - 5, epoch=epoch) as close_behind:
            assert (await close_behind.recv())["seq"] == head - 5
            check_sequence(await close_behind.take(5), after=head - 5, epoch=epoch)

        gone = "Events after that seq are no longer held"
        # (since relative to the head, epoch, reason); each round adds one event.
        for behind, asked_epoch, reason in (
            (6, epoch, gone),
            (head - start + 7, None, gone),
            (-1, epoch, gone),  # ahead of the log: not what this log said
            (0, "0123456789abcdef", "The event log was restarted"),
        ):
            since = max(0, head - behind)
            async with watch(server, agent_id, token, since=since, epoch=asked_epoch) as late:
                resync = await late.recv()
                check_resync(resync, agent_id, head=head, reason=reason)
                assert resync["epoch"] == epoch
                assert resync["status"]["status"] == "online"
                # The socket then goes on live from the head.
                await log(agent, 1, start=50)
                check_sequence(await late.take(1), after=head, epoch=epoch)
                await late.quiet()
            head += 1


async def test_events_older_than_the_window_age_need_a_resync(hubs: Hubs) -> None:
    server = await hubs.start(event_window_age=1.0)
    token, agent_id, agent_token = await watched_agent(server)

    async with agent_socket(server.ws_url, agent_token) as agent:
        await agent.hello()
        async with watch(server, agent_id, token) as watcher:
            snapshot = await watcher.recv()
            await log(agent, 2)
            await watcher.take(2)
        await asyncio.sleep(1.3)
        async with watch(
            server, agent_id, token, since=snapshot["seq"], epoch=snapshot["epoch"]
        ) as late:
            check_resync(
                await late.recv(),
                agent_id,
                head=snapshot["seq"] + 2,
                reason="Events after that seq are no longer held",
            )


async def test_reconnecting_while_the_agent_keeps_logging_loses_nothing(
    hubs: Hubs, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher that drops and resumes again and again, on alternating nodes in Redis mode,
    while the agent logs without pause: every event exactly once, in order. Leaving while
    events are being written is normal: the hub logs no failure for it."""
    caplog.set_level(logging.WARNING, logger="kai")
    one, two = await hubs.pair()
    token, agent_id, agent_token = await watched_agent(one)
    total = 400

    async def keep_logging(agent: RawAgent) -> None:
        for start in range(0, total, 4):
            await agent.send({"type": "log", "records": support.records(4, start=start)})
            await asyncio.sleep(0.002)  # spread over the watcher's reconnections
        await agent.heartbeat()

    async with agent_socket(one.ws_url, agent_token) as agent:
        await agent.hello()
        async with watch(one, agent_id, token) as watcher:
            snapshot = await watcher.recv()
        epoch, last = snapshot["epoch"], snapshot["seq"]
        first = last
        got: list[dict[str, Any]] = []
        producing = asyncio.create_task(keep_logging(agent))
        rounds = 0
        while len(got) < total:
            server = (one, two)[rounds % 2]
            rounds += 1
            async with watch(server, agent_id, token, since=last, epoch=epoch) as watcher:
                head = await watcher.recv()
                assert (head["type"], head["seq"]) == ("status_update", last), head
                # Read a few events, then drop the connection mid-stream.
                for _ in range(min(23, total - len(got))):
                    event = await watcher.recv()
                    got.append(event)
                    last = event["seq"]
        await producing
        assert rounds > 5
    check_sequence(got, after=first, epoch=epoch)
    assert messages(got) == [f"rec {i}" for i in range(total)]
    failures = [r for r in caplog.records if r.name.startswith("kai.realtime")]
    assert failures == [], [r.getMessage() for r in failures]


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_log_lost_under_an_open_socket_is_a_resync_then_events_go_on(hubs: Hubs) -> None:
    """The broker's Redis loses the agent's log (flushed, say): the next event starts a new
    epoch, and a watcher gets ``resync_required`` at that point, then the events after it."""
    server = await hubs.start()
    token, agent_id, agent_token = await watched_agent(server)
    assert hubs.redis_url is not None
    client = redis.Redis.from_url(hubs.redis_url)
    try:
        async with (
            agent_socket(server.ws_url, agent_token) as agent,
            watch(server, agent_id, token) as watcher,
        ):
            snapshot = await watcher.recv()
            await agent.hello()
            await log(agent, 3)
            check_sequence(await watcher.take(4), after=snapshot["seq"], epoch=snapshot["epoch"])

            keys = [k async for k in client.scan_iter(match=f"{hubs.prefix}agent:{agent_id}:*")]
            assert keys
            await client.delete(*keys)
            await log(agent, 20, start=3)

            resync = await watcher.recv()
            assert resync["type"] == "resync_required", resync
            assert resync["reason"] == "The event stream broke"
            assert resync["epoch"] != snapshot["epoch"]
            assert resync["status"]["seq"] == resync["seq"]
            # What follows continues the new log from the resync's seq: no event twice.
            after = await watcher.take(20 - resync["seq"])
            check_sequence(after, after=resync["seq"], epoch=resync["epoch"])
            assert after[-1]["entry"]["message"].strip() == "rec 22"
            await watcher.quiet()
    finally:
        await client.aclose()
