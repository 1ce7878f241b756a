"""Structured logs: JSON lines (or readable text) for every record, each line written while a
request is served carrying its id, the same id as in its problem+json answer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kai import logs
from tests.conftest import Running


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    """A stream for the hub's log handler, with the root logger put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


async def test_json_lines_carry_the_request_id(running: Running, stderr: io.StringIO) -> None:
    logs.setup("INFO", "json", stderr)
    response = await running.client.get("/api/agents/nope", headers={"X-Request-ID": "trace-7"})

    assert response.status_code == 401
    assert response.headers["x-request-id"] == "trace-7"
    assert response.json()["requestId"] == "trace-7"
    lines = [json.loads(line) for line in stderr.getvalue().splitlines() if line.strip()]
    access = [line for line in lines if line.get("logger") == "kai.access"]
    assert access, stderr.getvalue()
    assert access[-1]["request_id"] == "trace-7"
    assert (access[-1]["method"], access[-1]["path"], access[-1]["status"]) == (
        "GET",
        "/api/agents/nope",
        401,
    )
    assert access[-1]["level"] == "info"
    assert access[-1]["timestamp"].endswith("Z")
    assert isinstance(access[-1]["duration_ms"], float)

    # A line logged outside any request has no request id.
    logging.getLogger("kai.test").warning("between requests")
    last = json.loads(stderr.getvalue().splitlines()[-1])
    assert (last["event"], last["level"]) == ("between requests", "warning")
    assert "request_id" not in last


async def test_a_terminal_gets_readable_lines(running: Running, stderr: io.StringIO) -> None:
    logs.setup("INFO", "console", stderr)
    await running.client.get("/api/agents/nope", headers={"X-Request-ID": "trace-8"})
    text = stderr.getvalue()
    line = next(line for line in text.splitlines() if "GET /api/agents/nope 401" in line)
    assert "request_id=trace-8" in line
    assert not line.lstrip().startswith("{")


async def test_every_problem_answer_carries_the_request_id(running: Running) -> None:
    for method, path, body in (
        ("GET", "/api/agents/nope", None),  # 401
        ("GET", "/no/such/route", None),  # 404
        ("POST", "/api/auth/login", {"wrong": True}),  # 422
    ):
        response = await running.client.request(method, path, json=body)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["requestId"] == response.headers["x-request-id"], (method, path)
