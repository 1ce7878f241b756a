"""Flow control on ``/ws/agents/{agentId}``: the per-user message rate, and slow consumers."""

from __future__ import annotations

import asyncio
from typing import Any

from kai.protocol.agent import MAX_LOG_BATCH
from kai.realtime.connection import ClientConnection
from tests.agents.support import HubServer, People, RawAgent, agent_socket, eventually
from tests.realtime import client_support as support
from tests.realtime.client_support import Hubs, Watcher, check_sequence, records, rss_bytes, watch

# The fixtures these tests use, by name.
mode = support.mode
hubs = support.hubs
backing = support.backing
shared_redis_url = support.shared_redis_url

MiB = 1024 * 1024


async def test_the_message_rate_is_limited_per_user_across_connections_and_nodes(
    hubs: Hubs,
) -> None:
    limits = {"ws_rate_limit": 5, "ws_rate_window": 60.0}  # a token every 12 s: none come back
    one, two = await hubs.pair(**limits)
    people = People(one)
    ann = await people.join("ann@example.com")
    bob = await people.join("bob@example.com")
    anns = await ann.create_agent()
    bobs = await bob.create_agent()

    async with (
        watch(one, anns.agent_id, ann.token) as first,
        watch(two, anns.agent_id, ann.token) as second,
        watch(two, bobs.agent_id, bob.token) as other,
    ):
        for watcher in (first, second, other):
            assert (await watcher.recv())["snapshot"] is True
        for _ in range(3):
            await first.heartbeat()
        for _ in range(2):
            await second.heartbeat()

        # Ann's five messages are spent, whichever of her sockets (and nodes) sent them.
        async def limited(watcher: Watcher, message: dict[str, Any]) -> None:
            await watcher.send(message)
            answer = await watcher.recv()
            assert answer["type"] == "error", answer
            assert answer["error"] == "Rate limit exceeded"
            assert isinstance(answer["retryAfter"], int)
            assert 1 <= answer["retryAfter"] <= 12, answer

        await limited(second, {"type": "heartbeat"})
        await limited(first, {"type": "heartbeat"})
        await limited(first, {"type": "explode"})  # counted before it is even read
        await limited(first, {"type": "status_update"})
        async with watch(two, anns.agent_id, ann.token) as third:
            assert (await third.recv())["snapshot"] is True  # connecting is not a message
            await limited(third, {"type": "heartbeat"})

        # Bob has a bucket of his own.
        for _ in range(5):
            await other.heartbeat()
        await limited(other, {"type": "heartbeat"})

        # Being limited closes nothing: the events still come.
        async with agent_socket(one.ws_url, anns.token) as agent:
            await agent.hello()
            for watcher in (first, second):
                online = await watcher.recv()
                assert (online["type"], online["status"]) == ("status_update", "online")


async def test_the_rate_limit_refills_over_its_window(hubs: Hubs) -> None:
    server = await hubs.start(ws_rate_limit=2, ws_rate_window=1.0)
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    async with watch(server, created.agent_id, ann.token) as watcher:
        await watcher.recv()
        await watcher.heartbeat()
        await watcher.heartbeat()
        await watcher.send({"type": "heartbeat"})
        refused = await watcher.recv()
        assert (refused["error"], refused["retryAfter"]) == ("Rate limit exceeded", 1)
        await asyncio.sleep(0.6)  # two tokens a second: one is back
        await watcher.heartbeat()


# -- slow consumers ------------------------------------------------------------------------------


def connections(server: HubServer, agent_id: str) -> list[ClientConnection]:
    """The hub's side of the sockets watching ``agent_id`` on this node."""
    return [c for c in server.hub.clients._all if c.agent_id == agent_id]


async def flood(agent: RawAgent, count: int, *, start: int, size: int, batch: int = 50) -> None:
    """The agent logs ``count`` records of ``size`` characters, in batches, as fast as it can."""
    for first in range(start, start + count, batch):
        await agent.send({"type": "log", "records": records(batch, start=first, size=size)})
        if (first - start) % (batch * 4) == 0:
            await agent.heartbeat()  # keep the hub's reading of the agent in step
    await agent.heartbeat()


class Counter:
    """Reads a watcher as fast as it can, keeping only the seq numbers."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.seqs: list[int] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.watcher.recv(timeout=60)
            self.watcher.received.clear()
            assert message["type"] == "log_stream", message
            self.seqs.append(message["seq"])

    async def reached(self, count: int, timeout: float) -> None:
        async def check() -> bool:
            if self.task.done():
                self.task.result()  # raises why the reading stopped
            return len(self.seqs) >= count

        await eventually(check, timeout, what=f"{count} events at the fast watcher")


async def test_a_watcher_that_keeps_reading_gets_a_burst_bigger_than_its_queue(
    hubs: Hubs,
) -> None:
    """One log batch of MAX_LOG_BATCH records is 500 events at once: a watcher that reads
    them as they come is no slow consumer, however small its queue."""
    server = await hubs.start(ws_send_queue=100)
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    async with agent_socket(server.ws_url, created.token) as agent:
        await agent.hello()
        async with watch(server, created.agent_id, ann.token) as watcher:
            snapshot = await watcher.recv()
            await agent.send({"type": "log", "records": records(MAX_LOG_BATCH)})
            events = await watcher.take(MAX_LOG_BATCH)
            check_sequence(events, after=snapshot["seq"], epoch=snapshot["epoch"])
            await watcher.heartbeat()


async def test_a_watcher_that_stops_reading_is_dropped_and_memory_stays_flat(hubs: Hubs) -> None:
    # This agent floods on purpose: its log quota must not be what holds it back.
    server = await hubs.start(
        ws_send_queue=100,
        agent_log_records_per_window=10**7,
        agent_log_bytes_per_window=1024**3,
    )
    ann = await People(server).join("ann@example.com")
    created = await ann.create_agent()
    agent_id = created.agent_id
    # 20,000 such events queued for the stalled watcher would be some 50 MiB.
    size = 2048
    warmup, total = 2_000, 20_000

    async with agent_socket(server.ws_url, created.token) as agent:
        await agent.hello()
        async with (
            watch(server, agent_id, ann.token) as fast,
            # A client that reads nothing: it stops reading its socket once 16 frames wait.
            watch(server, agent_id, ann.token, max_queue=16) as stalled,
        ):
            snapshot = await fast.recv()
            counter = Counter(fast)
            await eventually(
                lambda: _count(connections(server, agent_id), 2), 5, what="both watchers in"
            )
            try:
                # Warm up: the hub's caches and buffers reach their working size first.
                await flood(agent, warmup, start=0, size=size)
                await counter.reached(warmup, timeout=60)
                before = rss_bytes()

                await flood(agent, total, start=warmup, size=size)
                await counter.reached(warmup + total, timeout=120)
                growth = rss_bytes() - before
            finally:
                counter.task.cancel()

            assert growth < 30 * MiB, f"the hub grew by {growth / MiB:.1f} MiB"
            # The fast watcher got every event, in order.
            assert counter.seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + 22_000))
            # The hub gave up on the stalled one (and only that one): it queues nothing more
            # for it, and closes it as soon as the socket takes a frame again.
            hub_side = connections(server, agent_id)
            assert sorted((c.dropped, c.closing) for c in hub_side) == [
                (False, False),
                (True, True),
            ]

            # Once it reads again, it gets what was already on its way, then 4008.
            code, reason = await stalled.closed(timeout=30)
            assert (code, reason) == (4008, "Slow consumer: resume with ?since")
            got = stalled.received
            assert got[0]["snapshot"] is True
            events = got[1:]
            assert 0 < len(events) < warmup + total
            check_sequence(events, after=got[0]["seq"], epoch=got[0]["epoch"])
            await eventually(
                lambda: _count(connections(server, agent_id), 1), 5, what="the stalled one gone"
            )

        # As told, it reconnects with ?since: the events it missed are past the window.
        async with watch(
            server, agent_id, ann.token, since=events[-1]["seq"], epoch=got[0]["epoch"]
        ) as again:
            resync = await again.recv()
            assert resync["type"] == "resync_required"
            assert resync["seq"] == snapshot["seq"] + warmup + total


async def _count(found: list[ClientConnection], expected: int) -> bool:
    return len(found) == expected
