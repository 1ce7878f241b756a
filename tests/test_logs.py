"""Structured logs: JSON lines (or readable text) for every record, each line written while a
request is served carrying its id, the same id as in its problem+json answer."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kai.kit import logs
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


SECRET_LINES = [
    ("< authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "c2lnbmF0dXJl"),
    ('TEXT \'{"type":"auth","token":"eyJhbGciOiJIUzI1NiJ9.eyJzd\' [349 bytes]', "eyJzd"),
    ("agent kai_agent_Zm9vYmFyYmF6cXV4 connected", "Zm9vYmFyYmF6cXV4"),
    ("open http://hub/login/magic#token=Q2hlY2tNYXRl&x=1", "Q2hlY2tNYXRl"),
    ('{"refreshToken": "b3BhcXVlLXJlZnJlc2g", "password": "pw with spaces"}', "b3BhcXVl"),
    ('{"refreshToken": "b3BhcXVlLXJlZnJlc2g", "password": "pw with spaces"}', "spaces"),
    ("{'password': 'hunter22'}", "hunter22"),
    ("connect postgresql+asyncpg://kai:db-pass-1@db:5432/kai", "db-pass-1"),
    ("smtp://kai:mail-pass@smtp.example.com:587", "mail-pass"),
    ("AUTH PLAIN AGthaQBtYWlsLXBhc3M=", "AGthaQBtYWlsLXBhc3M="),
    ("KAI_AGENT_TOKEN=abcdefghijkl kai agent run", "abcdefghijkl"),
]


@pytest.mark.parametrize(("line", "secret"), SECRET_LINES)
def test_the_redactor_hides_every_kind_of_secret(line: str, secret: str) -> None:
    redacted = logs.Redactor().text(line)
    assert secret not in redacted
    assert logs.REDACTED in redacted


def test_the_redactor_keeps_ordinary_lines_and_hides_secret_fields() -> None:
    redactor = logs.Redactor(["configured-secret-value"])
    for line in ("agent exited with code=3", "3 tokens queued", "GET /api/tasks 200 8.1ms"):
        assert redactor.text(line) == line
    assert redactor.text("the key is configured-secret-value.") == "the key is [redacted]."
    event = redactor(
        None, "info", {"event": "x", "password": "p", "extra": {"api_key": "k", "n": 1}}
    )
    assert event == {
        "event": "x",
        "password": "[redacted]",
        "extra": {"api_key": "[redacted]", "n": 1},
    }


def test_secrets_of_the_environment_are_known_to_the_redactor() -> None:
    found = logs.environment_secrets(
        {
            "KAI_ADMIN_PASSWORD": "admin-pass-1",
            "KAI_SECRET_KEY": "signing-key-0123456789",
            "KAI_DATABASE_URL": "postgresql://kai:db-pass-1@db/kai",
            "KAI_REDIS_URL": "redis://127.0.0.1:6379/0",
            "KAI_PORT": "8000",
            "KAI_SMTP_URL": "smtp://u:short@h",  # too short for a value; the URL pattern hides it
        }
    )
    assert set(found) == {"admin-pass-1", "signing-key-0123456789", "db-pass-1"}


def test_a_traceback_is_redacted_too(stderr: io.StringIO) -> None:
    logs.setup("DEBUG", "console", stream=stderr)
    try:
        raise ValueError("bad token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
    except ValueError:
        logging.getLogger("kai.test").exception("failed")
    text = stderr.getvalue()
    assert "ValueError" in text
    assert "c2lnbmF0dXJl" not in text
