"""An agent's ``logging`` records reach the hub as ``log`` batches, also across a reconnect."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from kai.protocol.agent import MAX_LOG_BATCH, Close
from kai.sdk import Agent
from tests.sdk.support import FakeHub, running, until

log = logging.getLogger("tests.sdk.worker")


def logging_agent() -> Agent:
    agent = Agent("logging")

    @agent.setup
    def setup() -> None:
        log.info("set up")

    return agent


async def test_records_reach_the_hub_with_level_logger_and_extra(hub: FakeHub) -> None:
    async with running(logging_agent(), hub.url):
        side = await hub.connection()
        assert (await side.log_record("set up"))["logger"] == "tests.sdk.worker"
        before = datetime.now(UTC)

        # Emitted together, between two flushes: they travel in one batch.
        log.debug("below the level")
        log.info("started %s", "indexing")
        log.warning("retrying", extra={"attempt": 2, "host": "db", "config": {"a": 1}})
        logging.getLogger("websockets.client").warning("socket noise")
        logging.getLogger("asyncio").error("loop noise")
        logging.getLogger("kai.sdk.connection").warning("connection noise")
        try:
            raise ValueError("bad input")
        except ValueError:
            log.exception("indexing failed")
        logging.getLogger("tests.sdk.other").critical("out of disk")

        last = await side.log_record("out of disk")
        batch = next(m["records"] for m in side.of("log") if last in m["records"])
        assert [(r["level"], r["logger"], r["message"].split("\n")[0]) for r in batch] == [
            ("INFO", "tests.sdk.worker", "started indexing"),
            ("WARNING", "tests.sdk.worker", "retrying"),
            ("ERROR", "tests.sdk.worker", "indexing failed"),
            ("CRITICAL", "tests.sdk.other", "out of disk"),
        ]
        assert batch[1]["extra"] == {"attempt": 2, "host": "db", "config": "{'a': 1}"}
        assert "extra" not in batch[0]
        assert "Traceback (most recent call last)" in batch[2]["message"]
        assert batch[2]["message"].endswith("ValueError: bad input")
        for record in batch:
            moment = datetime.fromisoformat(record["timestamp"])
            assert moment.utcoffset() == timedelta(0)
            assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)

        # Records of the socket library, asyncio and the SDK's connection stay local.
        messages = [r["message"] for r in side.logs()]
        assert not {"socket noise", "loop noise", "connection noise", "below the level"} & set(
            messages
        )


async def test_many_records_go_in_batches_of_at_most_500(hub: FakeHub) -> None:
    async with running(logging_agent(), hub.url):
        side = await hub.connection()
        await side.log_record("set up")
        for number in range(MAX_LOG_BATCH + 100):
            log.info("record %d", number)

        await side.log_record(f"record {MAX_LOG_BATCH + 99}")
        sizes = [len(m["records"]) for m in side.of("log")]
        assert sizes[-2:] == [MAX_LOG_BATCH, 100]
        numbered = [r["message"] for r in side.logs() if r["message"].startswith("record ")]
        assert numbered == [f"record {n}" for n in range(MAX_LOG_BATCH + 100)]


async def test_records_made_while_disconnected_arrive_after_reconnecting(hub: FakeHub) -> None:
    """Kept while the hub is away, oldest dropped (and counted) beyond 10,000; then sent."""
    agent = logging_agent()
    capacity = 10_000
    over = 25
    async with running(agent, hub.url):
        first = await hub.connection(1)
        await first.log_record("set up")

        hub.welcome_gate.clear()  # the next connection waits for its welcome
        await first.close(Close.GOING_AWAY, "Hub shutting down")
        await until(lambda: not agent.connected.is_set(), what="the disconnect")
        log.warning("while away")
        for number in range(capacity + over):
            log.info("backlog %d", number)
        assert agent.log_handler.dropped == over + 1  # "while away" was the oldest
        await until(lambda: len(hub.connections) == 2, what="the second connection")
        log.info("while reconnecting")  # connected, before the welcome
        hub.welcome_gate.set()

        second = await hub.connection(2)
        await second.log_record("while reconnecting", timeout=10)
        messages = [r["message"] for r in second.logs()]
        assert messages == [f"backlog {n}" for n in range(over + 1, capacity + over)] + [
            "while reconnecting"
        ]
        assert all(len(m["records"]) <= MAX_LOG_BATCH for m in second.of("log"))
        assert [r["message"] for r in first.logs()] == ["set up"]
        assert agent.log_handler.dropped == over + 2


async def test_a_clean_stop_flushes_the_records_and_closes_normally(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    agent = logging_agent()
    async with running(agent, hub.url) as task:
        side = await hub.connection()
        await side.log_record("set up")
        log.info("last words")
        agent.stop()
        await asyncio.wait_for(task, 5)

    assert [r["message"] for r in side.logs()] == ["set up", "last words"]
    assert side.close_code == Close.NORMAL
    # The agent closed the socket itself: it does not report that the hub did.
    sdk_warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "kai.sdk.connection" and r.levelno >= logging.WARNING
    ]
    assert sdk_warnings == []
