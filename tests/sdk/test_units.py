"""``WorkStats.as_message`` and ``HubLogHandler`` on their own."""

from __future__ import annotations

import logging
import math
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kai.protocol.agent import MAX_LOG_MESSAGE
from kai.sdk.logbridge import HubLogHandler
from kai.sdk.stats import WorkStats

# -- WorkStats -------------------------------------------------------------------------------


def test_work_stats_start_empty() -> None:
    assert WorkStats().as_message() == {
        "commandsHandled": 0,
        "commandsFailed": 0,
        "tasksHandled": 0,
        "tasksFailed": 0,
        "handlingTimeMean": None,
        "handlingTimeP95": None,
    }


def test_work_stats_count_and_time_commands_and_tasks() -> None:
    stats = WorkStats()
    durations = list(range(1, 21))  # 1 s .. 20 s
    random.Random(7).shuffle(durations)
    for number, seconds in enumerate(durations):
        kind = "command" if number % 2 else "task"
        stats.record(kind, ok=number % 5 != 0, seconds=float(seconds))

    message = stats.as_message()
    assert message["commandsHandled"] == 10
    assert message["tasksHandled"] == 10
    failed = [n for n in range(20) if n % 5 == 0]  # 0, 5, 10, 15
    assert message["commandsFailed"] == sum(1 for n in failed if n % 2)
    assert message["tasksFailed"] == sum(1 for n in failed if not n % 2)
    assert message["handlingTimeMean"] == 10.5
    assert message["handlingTimeP95"] == 19.0  # nearest rank: the 19th of 20


def test_work_stats_single_value_rounding_and_window() -> None:
    stats = WorkStats()
    stats.record("command", ok=True, seconds=0.123456789)
    assert stats.as_message()["handlingTimeMean"] == 0.123457
    assert stats.as_message()["handlingTimeP95"] == 0.123457

    # Times are of the last 500 pieces of work; the counters are since the start.
    stats = WorkStats()
    for _ in range(100):
        stats.record("task", ok=False, seconds=1000.0)
    for _ in range(500):
        stats.record("command", ok=True, seconds=0.5)
    message = stats.as_message()
    assert (message["handlingTimeMean"], message["handlingTimeP95"]) == (0.5, 0.5)
    assert (message["tasksHandled"], message["tasksFailed"]) == (100, 100)
    assert (message["commandsHandled"], message["commandsFailed"]) == (500, 0)


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=500))
def test_work_stats_p95_is_the_nearest_rank(durations: list[float]) -> None:
    stats = WorkStats()
    for seconds in durations:
        stats.record("command", ok=True, seconds=seconds)
    message = stats.as_message()
    rank = math.ceil(len(durations) * 95 / 100)  # of 1..n, exactly
    assert message["handlingTimeP95"] == round(sorted(durations)[rank - 1], 6)
    assert message["handlingTimeMean"] == round(sum(durations) / len(durations), 6)


# -- HubLogHandler -----------------------------------------------------------------------------


def logger_with(handler: HubLogHandler, name: str = "tests.sdk.unit") -> logging.Logger:
    """A logger outside the logging tree: nothing of the test run's logging interferes."""
    logger = logging.Logger(name)
    logger.addHandler(handler)
    return logger


def messages(handler: HubLogHandler) -> list[str]:
    return [r["message"] for r in handler.take(len(handler) or 1)]


def test_handler_keeps_info_and_above_with_their_level_names() -> None:
    handler = HubLogHandler()
    logger = logger_with(handler)
    logger.debug("debug")
    logger.info("info")
    logger.log(25, "between info and warning")
    logger.warning("warning")
    logger.error("error")
    logger.log(45, "between error and critical")
    logger.critical("critical")
    logger.log(70, "above critical")

    assert [(r["level"], r["message"]) for r in handler.take()] == [
        ("INFO", "info"),
        ("INFO", "between info and warning"),
        ("WARNING", "warning"),
        ("ERROR", "error"),
        ("ERROR", "between error and critical"),
        ("CRITICAL", "critical"),
        ("CRITICAL", "above critical"),
    ]
    verbose = HubLogHandler(level=logging.NOTSET)
    logger_with(verbose).log(5, "very fine")
    assert verbose.take()[0]["level"] == "DEBUG"


def test_handler_leaves_the_socket_asyncio_and_connection_loggers_out() -> None:
    handler = HubLogHandler()
    quiet = ["websockets", "websockets.client", "asyncio", "kai.sdk.connection"]
    kept = ["kai.sdk", "kai.demo", "asyncio_jobs", "websockets_bridge", "tests.asyncio"]
    for name in quiet + kept:
        logger_with(handler, name).warning(name)
    assert messages(handler) == kept


def test_handler_record_fields() -> None:
    handler = HubLogHandler()
    logger = logger_with(handler, "x" * 250)
    before = datetime.now(UTC)
    logger.warning(
        "%s of %d",
        "one",
        2,
        extra={"n": 1, "ok": True, "ratio": 0.5, "none": None, "items": [1, 2], "big": "y" * 9},
    )
    logger.info("z" * (MAX_LOG_MESSAGE + 100), extra={"huge": ["w" * 1000]})
    logger.info("%d apples", "three")  # arguments that do not fit the format
    empty: dict[str, int] = {}
    try:
        empty["missing"]
    except KeyError:
        logger.error("lookup failed", exc_info=True)

    first, long, broken, failed = handler.take()
    assert first["message"] == "one of 2"
    assert first["level"] == "WARNING"
    assert first["logger"] == "x" * 200
    assert first["extra"] == {
        "n": 1,
        "ok": True,
        "ratio": 0.5,
        "none": None,
        "items": "[1, 2]",
        "big": "y" * 9,
    }
    moment = datetime.fromisoformat(first["timestamp"])
    assert moment.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)
    assert long["message"] == "z" * MAX_LOG_MESSAGE
    assert long["extra"]["huge"] == repr(["w" * 1000])[:500]
    assert broken["message"] == "%d apples"
    assert "extra" not in broken
    assert failed["message"].startswith("lookup failed\nTraceback (most recent call last)")
    assert failed["message"].endswith("KeyError: 'missing'")


def test_handler_buffer_is_bounded_and_drops_the_oldest() -> None:
    handler = HubLogHandler(capacity=3)
    logger = logger_with(handler)
    for number in range(5):
        logger.info("r%d", number)
    assert (len(handler), handler.dropped) == (3, 2)
    assert messages(handler) == ["r2", "r3", "r4"]
    assert len(handler) == 0

    default = HubLogHandler()  # 10,000 records wait, as the docs say
    logger = logger_with(default)
    for number in range(10_001):
        logger.info("r%d", number)
    assert (len(default), default.dropped) == (10_000, 1)
    assert default.take(1)[0]["message"] == "r1"


def test_handler_take_and_put_back_keep_the_order() -> None:
    handler = HubLogHandler()
    logger = logger_with(handler)
    for number in range(5):
        logger.info("r%d", number)
    batch = handler.take(2)
    assert [r["message"] for r in batch] == ["r0", "r1"]
    assert len(handler) == 3
    handler.put_back(batch)  # not sent: back to the front
    assert messages(handler) == ["r0", "r1", "r2", "r3", "r4"]
    assert handler.take() == []
