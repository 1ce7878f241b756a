"""What every broker does, on MemoryBroker and on RedisBroker alike: the log, replay, listeners,
presence and control messages of a single node."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

from kai.realtime.broker import Broker, Window
from kai.realtime.events import Event
from tests.realtime.conftest import BrokerFactory
from tests.realtime.support import Collector, Inbox, body, eventually, texts, until


async def publish(broker: Broker, agent_id: str, n: int, *, start: int = 0) -> list[Event]:
    """Publish ``n`` events one after the other; each must be logged at once."""
    events = []
    for i in range(start, start + n):
        event = await broker.publish(agent_id, {"type": "log", "n": i})
        assert event is not None
        events.append(event)
    return events


# -- the log ---------------------------------------------------------------------------------


async def test_seq_starts_at_one_and_has_no_gaps_under_concurrent_publishes(
    broker: Broker, agent_id: str
) -> None:
    published = await asyncio.gather(
        *(broker.publish(agent_id, {"type": "log", "n": i}) for i in range(200))
    )
    events = [e for e in published if e is not None]
    assert len(events) == 200
    assert sorted(e.seq for e in events) == list(range(1, 201))
    assert len({e.epoch for e in events}) == 1
    epoch = events[0].epoch
    assert await broker.head(agent_id) == (epoch, 200)
    # Each event's number is the one in its text, and the log holds them in that order.
    assert all(body(e)["seq"] == e.seq and body(e)["epoch"] == epoch for e in events)
    replay = await broker.replay(agent_id, since=0, epoch=epoch)
    by_seq = sorted(texts(events))
    assert texts(replay.events) == by_seq


async def test_an_event_carries_seq_epoch_timestamp_and_agent_in_its_text(
    broker: Broker, agent_id: str
) -> None:
    before = datetime.now().astimezone()
    event = await broker.publish(agent_id, {"type": "status", "state": "running"})
    assert event is not None
    sent = body(event)
    assert sent["type"] == "status"
    assert sent["state"] == "running"
    assert sent["agentId"] == agent_id == event.agent_id
    assert sent["seq"] == 1 == event.seq
    assert sent["epoch"] == event.epoch
    assert event.epoch
    assert sent["timestamp"].endswith("Z")
    stamped = datetime.fromisoformat(sent["timestamp"])
    assert before <= stamped <= datetime.now().astimezone()
    assert event.message == sent
    assert event.type == "status"


async def test_a_new_log_has_its_epoch_before_its_first_event(
    broker: Broker, agent_id: str
) -> None:
    epoch, head = await broker.head(agent_id)
    assert head == 0
    replay = await broker.replay(agent_id, since=0, epoch=None)
    assert (replay.epoch, replay.head, replay.events) == (epoch, 0, [])
    event = await broker.publish(agent_id, {"type": "log"})
    assert event is not None
    assert (event.epoch, event.seq) == (epoch, 1)


async def test_agents_have_logs_of_their_own(broker: Broker, agent_id: str) -> None:
    other = f"{agent_id}-other"
    try:
        await publish(broker, agent_id, 3)
        [first] = await publish(broker, other, 1)
        assert first.seq == 1
        assert (await broker.head(agent_id))[1] == 3
    finally:
        await broker.forget(other)


# -- replay ----------------------------------------------------------------------------------


async def test_replay_returns_exactly_the_events_after_since_in_order(
    broker: Broker, agent_id: str
) -> None:
    events = await publish(broker, agent_id, 10)
    epoch = events[0].epoch
    for since in (0, 4, 9):
        replay = await broker.replay(agent_id, since=since, epoch=epoch)
        assert (replay.epoch, replay.head) == (epoch, 10)
        assert texts(replay.events) == texts(events[since:])
    # Without an epoch the caller takes the log as it is.
    assert texts((await broker.replay(agent_id, since=7, epoch=None)).events) == texts(events[7:])


async def test_replay_at_the_head_is_empty(broker: Broker, agent_id: str) -> None:
    events = await publish(broker, agent_id, 3)
    replay = await broker.replay(agent_id, since=3, epoch=events[0].epoch)
    assert (replay.epoch, replay.head, replay.events) == (events[0].epoch, 3, [])


async def test_replay_past_the_head_or_of_another_epoch_is_none(
    broker: Broker, agent_id: str
) -> None:
    events = await publish(broker, agent_id, 3)
    epoch = events[0].epoch
    ahead = await broker.replay(agent_id, since=4, epoch=epoch)
    assert (ahead.epoch, ahead.head, ahead.events) == (epoch, 3, None)
    elsewhere = await broker.replay(agent_id, since=1, epoch="0123456789abcdef")
    assert (elsewhere.epoch, elsewhere.head, elsewhere.events) == (epoch, 3, None)
    assert (await broker.replay(agent_id, since=0, epoch="")).events is None


async def test_replay_beyond_the_count_window_is_none(
    brokers: BrokerFactory, agent_id: str
) -> None:
    broker = await brokers(window=Window(count=5, age=60.0))
    events = await publish(broker, agent_id, 300)
    epoch = events[0].epoch
    assert (await broker.head(agent_id)) == (epoch, 300)
    assert (await broker.replay(agent_id, since=0, epoch=epoch)).events is None
    assert (await broker.replay(agent_id, since=100, epoch=epoch)).events is None
    # Six events back is one more than the window holds.
    assert (await broker.replay(agent_id, since=294, epoch=epoch)).events is None
    kept = await broker.replay(agent_id, since=295, epoch=epoch)
    assert texts(kept.events) == texts(events[295:])
    assert (await broker.replay(agent_id, since=300, epoch=epoch)).events == []


async def test_replay_beyond_the_age_window_is_none(brokers: BrokerFactory, agent_id: str) -> None:
    broker = await brokers(window=Window(count=1000, age=0.3))
    events = await publish(broker, agent_id, 3)
    epoch = events[0].epoch
    published = time.monotonic()
    assert texts((await broker.replay(agent_id, since=0, epoch=epoch)).events) == texts(events)

    async def aged_out() -> bool:
        return (await broker.replay(agent_id, since=2, epoch=epoch)).events is None

    await eventually(aged_out, timeout=3.0, what="the newest event aging out")
    assert time.monotonic() - published >= 0.25
    for since in (0, 1):
        assert (await broker.replay(agent_id, since=since, epoch=epoch)).events is None
    # Nothing asked for is gone when the client is at the head, and new events are kept.
    assert (await broker.replay(agent_id, since=3, epoch=epoch)).events == []
    fresh = await publish(broker, agent_id, 1, start=3)
    assert texts((await broker.replay(agent_id, since=3, epoch=epoch)).events) == texts(fresh)


async def test_a_forgotten_log_starts_again_in_a_new_epoch(broker: Broker, agent_id: str) -> None:
    old = (await publish(broker, agent_id, 3))[0].epoch
    await broker.forget(agent_id)
    epoch, head = await broker.head(agent_id)
    assert head == 0
    assert epoch != old
    assert (await broker.replay(agent_id, since=0, epoch=old)).events is None
    [event] = await publish(broker, agent_id, 1)
    assert (event.epoch, event.seq) == (epoch, 1)


# -- listeners -------------------------------------------------------------------------------


async def test_listeners_receive_live_events_in_order(broker: Broker, agent_id: str) -> None:
    listener = Collector()
    await broker.subscribe(agent_id, listener)
    events = await publish(broker, agent_id, 20)
    await listener.wait_for(20)
    burst = await asyncio.gather(
        *(broker.publish(agent_id, {"type": "log", "n": i}) for i in range(20, 70))
    )
    assert all(e is not None for e in burst)
    await listener.wait_for(70)
    assert listener.seqs == list(range(1, 71))
    assert texts(listener.events[:20]) == texts(events)
    assert len({e.epoch for e in listener.events}) == 1
    assert {e.agent_id for e in listener.events} == {agent_id}


async def test_unsubscribe_stops_delivery(broker: Broker, agent_id: str) -> None:
    leaving, staying = Collector(), Collector()
    await broker.subscribe(agent_id, leaving)
    await broker.subscribe(agent_id, staying)
    await publish(broker, agent_id, 1)
    await leaving.wait_for(1)
    await staying.wait_for(1)
    await broker.unsubscribe(agent_id, leaving)
    await broker.unsubscribe(agent_id, leaving)  # twice is harmless
    await publish(broker, agent_id, 2, start=1)
    await staying.wait_for(3)
    assert staying.seqs == [1, 2, 3]
    assert leaving.seqs == [1]
    # The last listener leaving ends delivery for the agent on this node.
    await broker.unsubscribe(agent_id, staying)
    last = Collector()
    other = f"{agent_id}-other"
    try:
        await broker.subscribe(other, last)
        await publish(broker, agent_id, 1, start=3)
        await publish(broker, other, 1)
        await last.wait_for(1)  # published after the agent's, so that one was not held back
        assert staying.seqs == [1, 2, 3]
        assert leaving.seqs == [1]
    finally:
        await broker.unsubscribe(other, last)
        await broker.forget(other)


# -- presence and control messages -----------------------------------------------------------


async def test_presence_names_this_node_until_it_expires(broker: Broker, agent_id: str) -> None:
    assert await broker.presence(agent_id) is None
    await broker.set_presence(agent_id, ttl=0.3)
    set_at = time.monotonic()
    assert await broker.presence(agent_id) == broker.node_id

    async def gone() -> bool:
        return await broker.presence(agent_id) is None

    await eventually(gone, timeout=3.0, what="presence expiring")
    assert time.monotonic() - set_at >= 0.25


async def test_presence_is_refreshed_and_cleared(broker: Broker, agent_id: str) -> None:
    await broker.set_presence(agent_id, ttl=0.3)
    await broker.set_presence(agent_id, ttl=30)
    await asyncio.sleep(0.4)  # past the first TTL: the second one holds
    assert await broker.presence(agent_id) == broker.node_id
    await broker.clear_presence(agent_id)
    assert await broker.presence(agent_id) is None
    await broker.clear_presence(agent_id)  # clearing nothing is harmless


async def test_control_messages_reach_this_node(broker: Broker) -> None:
    tag = uuid.uuid4().hex
    inbox = Inbox(tag)
    broker.on_message(inbox)
    await broker.send_to_node("test-node-nowhere", {"tag": tag, "kind": "elsewhere"})
    await broker.send_to_node(broker.node_id, {"tag": tag, "kind": "direct", "n": 1})
    await until(lambda: inbox.has("direct"), what="the direct message")
    await broker.broadcast({"tag": tag, "kind": "everyone"})
    await until(lambda: inbox.has("everyone"), what="the broadcast")
    # The message for another node, sent first, would have arrived by now.
    assert inbox.kinds == ["direct", "everyone"]
    assert inbox.messages[0] == {"tag": tag, "kind": "direct", "n": 1}
