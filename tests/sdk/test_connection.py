"""The SDK's connection: restart, close codes, reconnecting with backoff across URLs,
and heartbeats carrying its own counters."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from kai.protocol.agent import Close
from kai.sdk import Agent, AgentStopped, TaskContext
from kai.sdk.agent import BACKOFF_BASE
from tests.agents.support import eventually
from tests.sdk.support import FakeHub, closed_url, fake_hub, running


def hooked_agent(events: list[str]) -> Agent:
    """An agent whose hooks and long task write what happens into ``events``."""
    agent = Agent("hooked")

    @agent.setup
    def setup() -> None:
        events.append("setup")

    @agent.teardown
    async def teardown() -> None:
        events.append("teardown")

    @agent.command("ping")
    def ping() -> str:
        return "pong"

    @agent.task("forever")
    async def forever(params: dict[str, Any], task: TaskContext) -> None:
        try:
            while True:
                await task.progress(0.5, "working")
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            events.append(f"cancelled {task.task_id}")
            raise

    return agent


async def test_restart_tears_down_sets_up_and_reconnects_at_once(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    events = hub.events  # the hooks and the hub write into one timeline
    agent = hooked_agent(events)
    async with fake_hub() as other, running(agent, hub.url, other.url) as task:
        first = await hub.connection(1)
        await first.send({"type": "task", "taskId": "long", "taskType": "forever", "params": {}})
        await first.first("task_progress", taskId="long")

        await first.send({"type": "restart", "reason": "requested"})
        second = await hub.connection(2)

        await asyncio.wait_for(first.ended.wait(), 5)
        assert first.close_code == Close.RESTART
        assert events == [
            "setup",
            "hello 1",
            "cancelled long",  # running work stops first
            "teardown",
            "setup",
            "closed 1 1012",  # the socket closes once set up again
            "hello 2",
        ]
        assert second.hello == agent.capabilities()
        await second.send({"type": "command", "commandId": "c1", "command": "ping", "params": {}})
        assert (await second.first("command_result", commandId="c1"))["result"] == "pong"

        # Once more: back to the hub that asked, not on to the next URL.
        await second.send({"type": "restart", "reason": "again"})
        await hub.connection(3)
        assert other.connections == []
        assert delays(caplog) == []  # and at once: no backoff after a restart
        assert not task.done()
    assert sorted(events[-2:]) == ["closed 3 1000", "teardown"]
    assert events.count("setup") == 3


FINAL = [
    (Close.REPLACED, "Replaced by a newer connection"),
    (Close.TOKEN_REVOKED, "Token rotated"),
    (Close.DELETED, "Agent deleted"),
]


@pytest.mark.parametrize(("code", "reason"), FINAL)
async def test_a_final_close_code_stops_the_agent(hub: FakeHub, code: int, reason: str) -> None:
    events: list[str] = []
    async with running(hooked_agent(events), hub.url) as task:
        side = await hub.connection()
        await side.close(code, reason)
        with pytest.raises(AgentStopped) as stopped:
            await asyncio.wait_for(task, 5)
    assert (stopped.value.code, stopped.value.reason) == (code, reason)
    assert events == ["setup", "teardown"]
    await asyncio.sleep(0.3)
    assert len(hub.connections) == 1  # it did not come back


async def test_a_refused_token_stops_the_agent(hub: FakeHub) -> None:
    """The hub closes with 1008 before any welcome when the token is wrong."""
    hub.refuse = (Close.AUTH_FAILED, "Authentication failed")
    events: list[str] = []
    async with running(hooked_agent(events), hub.url) as task:
        with pytest.raises(AgentStopped) as stopped:
            await asyncio.wait_for(task, 5)
    assert (stopped.value.code, stopped.value.reason) == (1008, "Authentication failed")
    assert events == ["setup", "teardown"]
    assert len(hub.connections) == 1


RETRY = [
    (Close.NORMAL, ""),
    (Close.GOING_AWAY, "Hub shutting down"),
    (Close.SERVER_ERROR, "Internal error"),
    (Close.HEARTBEAT_TIMEOUT, "Heartbeat timeout"),
    (Close.PROTOCOL_ERROR, "No hello received"),
]


@pytest.mark.parametrize(("code", "reason"), RETRY)
async def test_other_close_codes_make_the_agent_reconnect(
    hub: FakeHub, code: int, reason: str
) -> None:
    events: list[str] = []
    agent = hooked_agent(events)
    async with running(agent, hub.url) as task:
        first = await hub.connection(1)
        await asyncio.wait_for(agent.connected.wait(), 5)
        await first.close(code, reason)
        await asyncio.wait_for(first.ended.wait(), 5)
        assert first.close_code == code
        # The agent may be back before a poll could see it away: its new hello is the proof.
        second = await hub.connection(2, timeout=5)  # backoff: at most 1 s after a served one
        assert second.hello == agent.capabilities()
        await asyncio.wait_for(agent.connected.wait(), 5)
        await second.send({"type": "command", "commandId": "c1", "command": "ping", "params": {}})
        assert (await second.first("command_result", commandId="c1"))["result"] == "pong"
        assert not task.done()
    assert events == ["setup", "teardown"]  # a reconnect is not a restart


def delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    found = []
    for record in caplog.records:
        match = re.fullmatch(r"reconnecting to the hub in (\d+\.\d+)s", record.getMessage())
        if record.name == "kai.sdk.connection" and match:
            found.append(float(match.group(1)))
    return found


async def test_reconnect_tries_each_url_in_turn_with_backoff(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    refused = closed_url()
    agent = hooked_agent([])
    async with running(agent, refused, hub.url) as task:
        first = await hub.connection(1, timeout=5)
        await asyncio.wait_for(agent.connected.wait(), 5)
        await first.close(Close.GOING_AWAY, "Hub shutting down")
        # On to the next URL (the refused one again), then back here.
        await hub.connection(2, timeout=8)
        assert not task.done()

    unreachable = [
        r.getMessage()
        for r in caplog.records
        if r.name == "kai.sdk.connection" and "unreachable" in r.getMessage()
    ]
    assert unreachable == [f"hub at {refused} unreachable: ConnectionRefusedError"] * 2
    # Full jitter below min(30 s, 0.5 s x 2^failures): one failure, then (after a connection
    # that was served, which resets the count) one and two failures.
    waited = delays(caplog)
    assert len(waited) == 3, waited
    caps = [BACKOFF_BASE * 2, BACKOFF_BASE * 2, BACKOFF_BASE * 4]
    assert all(0 <= d <= cap for d, cap in zip(waited, caps, strict=True)), waited


async def test_stop_during_backoff_ends_run_at_once() -> None:
    agent = hooked_agent([])
    task = asyncio.create_task(agent.run([closed_url()], "token"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    agent.stop()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1


async def test_run_needs_a_url() -> None:
    with pytest.raises(ValueError, match="at least one hub URL"):
        await Agent("nowhere").run([], "token")


async def test_heartbeats_carry_the_agents_own_counters(hub: FakeHub) -> None:
    hub.heartbeat_interval = 0.1
    agent = Agent("counting")

    @agent.command("nap")
    async def nap(params: dict[str, Any]) -> None:
        await asyncio.sleep(params["seconds"])

    @agent.command("fail")
    def fail() -> None:
        raise RuntimeError("no")

    @agent.task("job")
    async def job(params: dict[str, Any]) -> None:
        if params.get("fail"):
            raise RuntimeError("job failed")

    async with running(agent, hub.url):
        side = await hub.connection()
        started = time.monotonic()
        idle = await side.first("heartbeat")
        assert idle == {
            "type": "heartbeat",
            "health": "healthy",
            "metrics": {
                "commandsHandled": 0,
                "commandsFailed": 0,
                "tasksHandled": 0,
                "tasksFailed": 0,
                "handlingTimeMean": None,
                "handlingTimeP95": None,
            },
        }

        for number, (name, params) in enumerate(
            [("nap", {"seconds": 0.05}), ("nap", {"seconds": 0.15}), ("fail", {})]
        ):
            await side.send(
                {"type": "command", "commandId": f"c{number}", "command": name, "params": params}
            )
        results = await side.several("command_result", 3)
        times = [r["executionTime"] for r in results]

        async def beat_after_commands() -> dict[str, Any] | None:
            beats = [h for h in side.of("heartbeat") if h["metrics"]["commandsHandled"] == 3]
            return beats[0]["metrics"] if beats else None

        metrics = await eventually(beat_after_commands, 5, what="a heartbeat after commands")
        assert metrics["commandsFailed"] == 1
        assert (metrics["tasksHandled"], metrics["tasksFailed"]) == (0, 0)
        assert metrics["handlingTimeMean"] == pytest.approx(sum(times) / 3, abs=1e-5)
        assert metrics["handlingTimeP95"] == pytest.approx(max(times), abs=1e-5)
        assert metrics["handlingTimeP95"] >= 0.15

        await side.send({"type": "task", "taskId": "t1", "taskType": "job", "params": {}})
        await side.send(
            {"type": "task", "taskId": "t2", "taskType": "job", "params": {"fail": True}}
        )

        async def beat_after_tasks() -> dict[str, Any] | None:
            beats = [h for h in side.of("heartbeat") if h["metrics"]["tasksHandled"] == 2]
            return beats[0]["metrics"] if beats else None

        metrics = await eventually(beat_after_tasks, 5, what="a heartbeat after tasks")
        assert (metrics["commandsHandled"], metrics["commandsFailed"]) == (3, 1)
        assert metrics["tasksFailed"] == 1
        # Never faster than the interval the welcome asked for.
        elapsed = time.monotonic() - started
        assert 2 <= len(side.of("heartbeat")) <= elapsed / 0.1 + 2
