"""``GET /api/agents/{id}/logs``: level and time filters, paging, order, the page cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kai.protocol.agent import MAX_LOG_BATCH
from tests.agents.support import HubServer, People, Person, agent_socket
from tests.helpers import assert_problem

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
COUNT = 1100  # more than one capped page
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def at(index: int) -> datetime:
    return BASE + timedelta(seconds=index)


def wire(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def record(index: int) -> dict[str, Any]:
    return {
        "timestamp": wire(at(index)),
        "level": LEVELS[index % len(LEVELS)],
        "message": f"record {index}",
        "logger": "tests.logs",
        "extra": {"index": index},
    }


async def logged_agent(server: HubServer, people: People) -> tuple[Person, str]:
    """An agent that sent COUNT records, one per second from BASE, levels in turn."""
    ann = await people.join("ann@example.com")
    created = await ann.create_agent()
    async with agent_socket(server.ws_url, created.token) as raw:
        await raw.hello()
        for start in range(0, COUNT, MAX_LOG_BATCH):
            batch = [record(i) for i in range(start, min(COUNT, start + MAX_LOG_BATCH))]
            await raw.send({"type": "log", "records": batch})
        await raw.heartbeat()  # answered after every batch before it was stored
    return ann, created.agent_id


def indexes(page: dict[str, Any]) -> list[int]:
    return [int(r["message"].removeprefix("record ")) for r in page["logs"]]


async def test_log_filters_paging_and_order(server: HubServer, people: People) -> None:
    ann, agent_id = await logged_agent(server, people)

    newest = await ann.logs(agent_id)
    assert (newest["total"], newest["hasMore"], newest["nextOffset"]) == (COUNT, True, 100)
    assert indexes(newest) == list(range(COUNT - 1, COUNT - 101, -1))  # newest first, 100
    first = newest["logs"][0]
    assert first["level"] == LEVELS[(COUNT - 1) % 5]
    assert first["logger"] == "tests.logs"
    assert first["extra"] == {"index": COUNT - 1}
    assert first["timestamp"] == wire(at(COUNT - 1))
    assert indexes(await ann.logs(agent_id, order="asc", limit=3)) == [0, 1, 2]

    # Level: that level and above, in either spelling.
    for level in ("WARNING", "error", "CRITICAL", "debug"):
        page = await ann.logs(agent_id, level=level, limit=1000)
        floor = LEVELS.index(level.upper())
        expected = [i for i in range(COUNT) if i % 5 >= floor]
        assert page["total"] == len(expected)
        assert {r["level"] for r in page["logs"]} == set(LEVELS[floor:])
        assert sorted(indexes(page)) == expected[-len(page["logs"]) :]

    # Time: startTime and endTime are both inclusive, and combine with the level.
    window = {"startTime": wire(at(100)), "endTime": wire(at(199))}
    page = await ann.logs(agent_id, **window, order="asc")
    assert (page["total"], indexes(page)) == (100, list(range(100, 200)))
    page = await ann.logs(agent_id, **window, level="ERROR", order="asc")
    assert indexes(page) == [i for i in range(100, 200) if i % 5 >= 3]
    page = await ann.logs(agent_id, startTime=wire(at(COUNT)))
    assert (page["total"], page["logs"], page["hasMore"], page["nextOffset"]) == (
        0,
        [],
        False,
        None,
    )

    # Paging: walking nextOffset visits every record once, in order.
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = await ann.logs(agent_id, order="asc", limit=150, offset=offset)
        assert page["total"] == COUNT
        assert page["hasMore"] == (page["nextOffset"] is not None)
        if page["hasMore"]:
            assert len(page["logs"]) == 150
            assert page["nextOffset"] == offset + 150
        seen += indexes(page)
        offset = page["nextOffset"]
    assert seen == list(range(COUNT))

    # A page holds at most 1000 records, whatever the limit asked.
    capped = await ann.logs(agent_id, limit=5000)
    assert (len(capped["logs"]), capped["hasMore"], capped["nextOffset"]) == (1000, True, 1000)
    rest = await ann.logs(agent_id, limit=5000, offset=1000)
    assert (len(rest["logs"]), rest["hasMore"], rest["nextOffset"]) == (COUNT - 1000, False, None)
    assert indexes(rest) == list(range(COUNT - 1001, -1, -1))
    beyond = await ann.logs(agent_id, offset=COUNT + 5)
    assert (beyond["logs"], beyond["total"], beyond["hasMore"]) == ([], COUNT, False)

    for bad in ({"limit": 0}, {"offset": -1}, {"level": "LOUD"}, {"order": "sideways"}):
        response = await ann.call("GET", f"/api/agents/{agent_id}/logs", params=bad)
        assert_problem(response, 422)
