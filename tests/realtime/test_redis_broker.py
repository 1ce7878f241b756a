"""What RedisBroker adds: several nodes on one Redis, gaps filled from the stream, a lost log,
an outage with events held in order, presence and control messages across nodes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis.asyncio as redis

from kai.realtime.broker import Window
from kai.realtime.events import Event, dumps
from kai.realtime.redis_broker import RedisBroker, _keys
from tests.realtime.conftest import RedisBrokerFactory
from tests.realtime.support import (
    Collector,
    DisposableRedis,
    Inbox,
    body,
    eventually,
    texts,
    until,
)


async def publish_one(broker: RedisBroker, agent_id: str, **fields: object) -> Event:
    event = await broker.publish(agent_id, {"type": "log", **fields})
    assert event is not None
    return event


# -- the log across nodes --------------------------------------------------------------------


async def test_listeners_on_two_nodes_get_the_same_sequence(
    redis_brokers: RedisBrokerFactory, agent_id: str
) -> None:
    one, two = await redis_brokers(), await redis_brokers()
    on_one, on_two = Collector(), Collector()
    await one.subscribe(agent_id, on_one)
    await two.subscribe(agent_id, on_two)
    # Both nodes publish at once; the log has one order, and every node sees that order.
    published = await asyncio.gather(
        *((one if i % 2 else two).publish(agent_id, {"type": "log", "n": i}) for i in range(100))
    )
    assert sorted(e.seq for e in published if e is not None) == list(range(1, 101))
    await on_one.wait_for(100)
    await on_two.wait_for(100)
    assert on_one.seqs == list(range(1, 101))
    assert texts(on_one.events) == texts(on_two.events)
    by_seq = sorted((e.seq, e.text) for e in published if e is not None)
    assert texts(on_one.events) == by_seq
    # A replay from either node is the same log.
    epoch = on_one.events[0].epoch
    assert texts((await two.replay(agent_id, since=0, epoch=epoch)).events) == by_seq


async def test_a_missed_message_is_filled_from_the_stream(
    redis_brokers: RedisBrokerFactory, redis_client: redis.Redis, agent_id: str
) -> None:
    publisher, watcher = await redis_brokers(), await redis_brokers()
    listener = Collector()
    await watcher.subscribe(agent_id, listener)
    first = await publish_one(publisher, agent_id, n=1)
    await listener.wait_for(1)
    # Event 2 goes into the log as the publish script would put it, but its pub/sub
    # message never goes out (as when it is lost on a reconnect).
    stream, seq_key, _, _ = _keys(agent_id, publisher.prefix)
    seq = await redis_client.incr(seq_key)
    assert seq == 2
    missing = dumps(
        {
            "type": "log",
            "n": 2,
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "agentId": agent_id,
            "seq": seq,
            "epoch": first.epoch,
        }
    )
    now_ms = int(time.time() * 1000)
    await redis_client.xadd(stream, {"d": missing, "t": str(now_ms)}, id=f"0-{seq}")
    third = await publish_one(publisher, agent_id, n=3)
    assert third.seq == 3
    await listener.wait_for(3)
    assert listener.seqs == [1, 2, 3]
    assert [e.text for e in listener.events] == [first.text, missing, third.text]
    assert len({e.epoch for e in listener.events}) == 1


async def test_a_lost_log_starts_again_in_a_new_epoch(
    redis_brokers: RedisBrokerFactory, redis_client: redis.Redis, agent_id: str
) -> None:
    publisher, watcher = await redis_brokers(), await redis_brokers()
    listener = Collector()
    await watcher.subscribe(agent_id, listener)
    old = [await publish_one(publisher, agent_id, n=i) for i in range(3)]
    await listener.wait_for(3)
    # What a FLUSHALL (or a Redis that restarted empty) does to this agent's log.
    assert await redis_client.delete(*_keys(agent_id, publisher.prefix)[:3]) == 3
    fresh = await publish_one(publisher, agent_id, n=3)
    assert fresh.seq == 1
    assert fresh.epoch != old[0].epoch
    assert (await watcher.head(agent_id)) == (fresh.epoch, 1)
    stale = await watcher.replay(agent_id, since=3, epoch=old[0].epoch)
    assert (stale.epoch, stale.head, stale.events) == (fresh.epoch, 1, None)
    assert (await watcher.replay(agent_id, since=0, epoch=old[0].epoch)).events is None
    replay = await watcher.replay(agent_id, since=0, epoch=fresh.epoch)
    assert texts(replay.events) == texts([fresh])
    await listener.wait_for(4)
    assert [(e.epoch, e.seq) for e in listener.events] == [
        *((old[0].epoch, s) for s in (1, 2, 3)),
        (fresh.epoch, 1),
    ]
    assert listener.events[3].text == fresh.text


async def test_the_stream_is_trimmed_to_about_the_window(
    redis_brokers: RedisBrokerFactory, redis_client: redis.Redis, agent_id: str
) -> None:
    broker = await redis_brokers(window=Window(count=5, age=60.0))
    for i in range(300):
        await publish_one(broker, agent_id, n=i)
    length = await redis_client.xlen(_keys(agent_id, broker.prefix)[0])
    # MAXLEN ~ trims whole stream nodes (100 entries by default), never below the window.
    assert 5 <= length <= 5 + 100


# -- an outage -------------------------------------------------------------------------------


async def test_events_published_while_redis_is_down_go_out_in_order_when_it_is_back(
    disposable_redis: DisposableRedis, redis_brokers: RedisBrokerFactory, agent_id: str
) -> None:
    publisher = await redis_brokers(url=disposable_redis.url)
    watcher = await redis_brokers(url=disposable_redis.url)
    listener, leaving = Collector(), Collector()
    await watcher.subscribe(agent_id, listener)
    await watcher.subscribe(f"{agent_id}-other", leaving)
    before, _ = await watcher.head(agent_id)

    disposable_redis.kill()
    for i in range(5):
        assert await publisher.publish(agent_id, {"type": "log", "n": i}) is None
    # Clients leaving during the outage must not fail: one of several, and the last one.
    await until(lambda: not watcher.connected, what="the watcher noticing the outage")
    gone, other_agent = Collector(), f"{agent_id}-other"
    await watcher.subscribe(agent_id, gone)
    await watcher.unsubscribe(agent_id, gone)
    await watcher.unsubscribe(other_agent, leaving)
    await disposable_redis.start()
    # Published as Redis returns, this one must not overtake those held before it.
    late = await publisher.publish(agent_id, {"type": "log", "n": 5})
    assert late is None or late.seq == 6

    client = redis.Redis.from_url(disposable_redis.url)
    try:
        stream = _keys(agent_id, publisher.prefix)[0]

        async def logged() -> list[Any]:
            rows: list[Any] = list(await client.xrange(stream) or [])
            return rows if len(rows) >= 6 else []

        rows = await eventually(logged, timeout=15.0, what="the held events reaching Redis")
    finally:
        await client.aclose()
    assert [entry_id for entry_id, _ in rows] == [f"0-{s}".encode() for s in range(1, 7)]
    logged_bodies = [body(fields[b"d"]) for _, fields in rows]
    assert [b["n"] for b in logged_bodies] == [0, 1, 2, 3, 4, 5]
    assert [b["seq"] for b in logged_bodies] == [1, 2, 3, 4, 5, 6]
    assert len({b["epoch"] for b in logged_bodies}) == 1
    # The server came back empty: the log it now holds is a new one.
    assert logged_bodies[0]["epoch"] != before

    await listener.wait_for(6, timeout=15.0)
    assert listener.seqs == [1, 2, 3, 4, 5, 6]
    assert [body(e)["n"] for e in listener.events] == [0, 1, 2, 3, 4, 5]
    assert {e.epoch for e in listener.events} == {logged_bodies[0]["epoch"]}
    assert gone.events == []
    # With the outbox empty, publishing is immediate again.
    seventh = await publish_one(publisher, agent_id, n=6)
    assert (seventh.seq, seventh.epoch) == (7, logged_bodies[0]["epoch"])
    await listener.wait_for(7)
    assert listener.seqs == [1, 2, 3, 4, 5, 6, 7]


# -- presence and control messages across nodes ----------------------------------------------


async def test_presence_is_seen_from_every_node_and_cleared_only_by_its_holder(
    redis_brokers: RedisBrokerFactory, agent_id: str
) -> None:
    one, two = await redis_brokers(), await redis_brokers()
    await one.set_presence(agent_id, ttl=30)
    assert await two.presence(agent_id) == one.node_id
    await two.clear_presence(agent_id)  # not two's to clear
    assert await one.presence(agent_id) == one.node_id
    # The agent reconnects through node two; node one's late cleanup must not undo that.
    await two.set_presence(agent_id, ttl=30)
    await one.clear_presence(agent_id)
    assert await one.presence(agent_id) == two.node_id
    await two.clear_presence(agent_id)
    assert await one.presence(agent_id) is None


async def test_presence_expires_after_its_ttl_on_every_node(
    redis_brokers: RedisBrokerFactory, agent_id: str
) -> None:
    one, two = await redis_brokers(), await redis_brokers()
    await one.set_presence(agent_id, ttl=0.3)
    set_at = time.monotonic()
    assert await two.presence(agent_id) == one.node_id

    async def gone() -> bool:
        return await two.presence(agent_id) is None

    await eventually(gone, timeout=3.0, what="presence expiring")
    assert time.monotonic() - set_at >= 0.25
    assert await one.presence(agent_id) is None


async def test_send_to_node_reaches_that_node_only_and_broadcast_reaches_all(
    redis_brokers: RedisBrokerFactory,
) -> None:
    tag = uuid.uuid4().hex
    nodes = [await redis_brokers() for _ in range(3)]
    inboxes = [Inbox(tag) for _ in nodes]
    for node, inbox in zip(nodes, inboxes, strict=True):
        node.on_message(inbox)
    sender, target, bystander = nodes
    await sender.send_to_node(target.node_id, {"tag": tag, "kind": "kick", "agent": "a1"})
    await until(lambda: inboxes[1].has("kick"), what="the message reaching its node")
    assert inboxes[1].messages == [{"tag": tag, "kind": "kick", "agent": "a1"}]
    await bystander.broadcast({"tag": tag, "kind": "everyone"})
    await until(lambda: all(i.has("everyone") for i in inboxes), what="the broadcast")
    # Published before the broadcast, the direct message would have reached them first.
    assert inboxes[0].kinds == ["everyone"]
    assert inboxes[1].kinds == ["kick", "everyone"]
    assert inboxes[2].kinds == ["everyone"]
