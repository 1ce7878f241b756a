"""Bad input from clients is refused with a 4xx problem, never a 500 (finding 10 of issue 12):
offsets and positions past what a column holds, free-form JSON nested too deep or holding
numbers the hub cannot store or relay. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kai.protocol.bounds import MAX_INT, MAX_JSON_DEPTH, json_problem
from tests.helpers import Api, assert_problem, bearer

HUGE = "99999999999999999999"


def nested(depth: int) -> Any:
    """A JSON value ``depth`` arrays deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def fields(response: httpx.Response) -> list[str]:
    return [problem["field"] for problem in response.json().get("errors", [])]


@pytest.fixture
async def admin(api: Api) -> dict[str, str]:
    return bearer(await api.admin_token())


@pytest.fixture
async def agent_id(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    response = await client.post("/api/agents", json={"agentData": {"name": "a"}}, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["agentId"])


async def test_offsets_and_limits_past_a_column_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], agent_id: str
) -> None:
    lists = [
        f"/api/agents/{agent_id}/logs",
        f"/api/agents/{agent_id}/tasks",
        f"/api/agents/{agent_id}/files",
        "/api/audit",
        "/api/users",
        "/api/invites",
    ]
    for path in lists:
        for name, value in (("offset", HUGE), ("offset", MAX_INT + 1), ("limit", HUGE)):
            response = await client.get(path, params={name: value}, headers=admin)
            assert_problem(response, 422)
            assert fields(response) == [f"query.{name}"], (path, response.text)
        # The largest offset allowed is an empty page, not an error.
        response = await client.get(path, params={"offset": MAX_INT}, headers=admin)
        assert response.status_code == 200, (path, response.text)


async def test_stream_positions_past_a_column_are_422_before_any_event(
    client: httpx.AsyncClient, admin: dict[str, str], agent_id: str
) -> None:
    events = "/api/streams/no-such-stream/events"
    response = await client.get(events, headers={**admin, "Last-Event-ID": "9" * 400})
    assert_problem(response, 422)
    assert fields(response) == ["header.Last-Event-ID"]
    response = await client.get(events, params={"from": HUGE}, headers=admin)
    assert_problem(response, 422)
    assert fields(response) == ["query.from"]
    # In range, the same request reaches the route (the stream does not exist).
    response = await client.get(events, headers={**admin, "Last-Event-ID": str(MAX_INT)})
    assert_problem(response, 404)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 900])
async def test_free_json_nested_too_deep_is_422_everywhere(
    client: httpx.AsyncClient, admin: dict[str, str], agent_id: str, depth: int
) -> None:
    deep = {"a": nested(depth)}
    bodies: list[tuple[str, str, dict[str, Any], str]] = [
        (
            "POST",
            f"/api/agents/{agent_id}/command",
            {"command": "x", "parameters": deep},
            "parameters",
        ),
        (
            "POST",
            f"/api/agents/{agent_id}/task",
            {"taskType": "t", "parameters": deep},
            "parameters",
        ),
        (
            "POST",
            f"/api/agents/{agent_id}/stream-prompt",
            {"prompt": "p", "context": deep},
            "context",
        ),
        (
            "POST",
            f"/api/agents/{agent_id}/stream-prompt",
            {"prompt": "p", "options": deep},
            "options",
        ),
        ("POST", "/api/agents", {"agentData": {"name": "b", "config": deep}}, "agentData.config"),
        ("PUT", f"/api/agents/{agent_id}", {"updates": {"config": deep}}, "updates.config"),
        ("PUT", "/api/config", {"settings": deep}, "settings"),
    ]
    for method, path, body, field in bodies:
        response = await client.request(method, path, json=body, headers=admin)
        assert_problem(response, 422)
        assert fields(response) == [field], (path, response.text)
        assert "nested deeper than" in response.text
    files = {"file": ("a.txt", b"hi", "text/plain")}
    metadata = {"metadata": (None, f'{{"a": {"[" * depth}1{"]" * depth}}}')}
    response = await client.post(
        f"/api/agents/{agent_id}/upload", files={**files, **metadata}, headers=admin
    )
    assert_problem(response, 422)


async def test_numbers_the_hub_cannot_relay_are_422(
    client: httpx.AsyncClient, admin: dict[str, str], agent_id: str
) -> None:
    path = f"/api/agents/{agent_id}/task"
    for raw in ("1" + "0" * 30, "NaN", "Infinity", "-Infinity"):
        body = f'{{"taskType": "t", "parameters": {{"n": {raw}}}}}'
        response = await client.post(
            path, content=body, headers={**admin, "Content-Type": "application/json"}
        )
        assert_problem(response, 422)
        assert fields(response) == ["parameters"], (raw, response.text)
    # Just inside the bounds, the task is queued.
    ok = {"taskType": "t", "parameters": {"n": 2**63 - 1, "deep": nested(MAX_JSON_DEPTH - 2)}}
    response = await client.post(path, json=ok, headers=admin)
    assert response.status_code == 201, response.text
    status = await client.get(f"/api/tasks/{response.json()['taskId']}/status", headers=admin)
    assert status.status_code == 200, status.text


def test_json_problem_names_each_bound() -> None:
    assert json_problem({"a": [1, 2.5, "x", None, True]}) is None
    assert json_problem(nested(MAX_JSON_DEPTH)) is None
    assert json_problem(nested(MAX_JSON_DEPTH + 1)) == (
        f"JSON is nested deeper than {MAX_JSON_DEPTH} levels"
    )
    assert json_problem({"a": {"b": nested(MAX_JSON_DEPTH)}}) is not None
    assert json_problem(2**64 - 1) is None
    assert json_problem([2**64]) == "JSON holds an integer wider than 64 bits"
    assert json_problem([-(2**63) - 1]) is not None
    assert json_problem({"x": float("nan")}) == "JSON holds a number that is not finite"
    assert json_problem(nested(100_000)) is not None  # no recursion to run out of
