"""docs/reference.md against the hub itself: every route of the OpenAPI schema is listed with
the permission its signature declares, every route and WebSocket listed exists, and every
message type listed is one kai sends or takes (and every type an agent or client may send is
listed)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Route, WebSocketRoute

from kai.app import create_app
from kai.config import Settings
from kai.protocol.agent import AGENT_MESSAGE_TYPES
from kai.realtime.handlers import default_handlers
from kai.teams.socket import HANDLERS as TEAM_HANDLERS
from tests.agents.processes import REPO_ROOT
from tests.conftest import TEST_SECRET

PAGE = REPO_ROOT / "docs" / "reference.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE)` \| `([^`]+)` \| ([^|]+) \|", re.M)
SOCKET = re.compile(r"^\| `(/ws/[^`]+)` \|", re.M)
MESSAGE = re.compile(
    r"^\| `(\w+)` \| (hub → agent|agent → hub|hub → client|client → hub|both) \|", re.M
)
PERMISSION = re.compile(r"`(\w+:\w+)`")
# Routes that check their permission in their own code rather than in their signature.
CHECKED_INSIDE = {("GET", "/api/files/{fileId}"): {"agents:read"}}
# Registered when the hub starts (it needs the hub), not in the default handlers.
STARTED_HANDLERS = {"command_execute"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    data = tmp_path_factory.mktemp("reference")
    return create_app(Settings(data_dir=data, secret_key=TEST_SECRET))


def routes(found: Iterable[Any]) -> Iterator[Any]:
    """Every route of the app, through FastAPI's included routers."""
    for route in found:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from routes(included.routes)
        else:
            yield route


def permissions(route: APIRoute) -> set[str]:
    """The permissions a route's dependencies require (``Require("x:y")`` is ``require_x_y``)."""
    found: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        name = getattr(dependant.call, "__name__", "")
        if name.startswith("require_"):
            found.add(name.removeprefix("require_").replace("_", ":", 1))
        pending.extend(dependant.dependencies)
    return found


def listed() -> dict[tuple[str, str], str]:
    rows: dict[tuple[str, str], str] = {}
    for method, path, permission in ROW.findall(PAGE.read_text()):
        assert (method, path) not in rows, f"{method} {path} is listed twice"
        rows[(method, path)] = permission
    return rows


def test_every_route_of_the_schema_is_listed(app: FastAPI) -> None:
    schema = app.openapi()
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    }
    missing = sorted(documented - set(listed()))
    assert not missing, f"reference.md lacks {missing}"


def test_every_route_listed_exists_with_its_permission(app: FastAPI) -> None:
    served: dict[tuple[str, str], set[str]] = {}
    for route in routes(app.routes):
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                served[(method, route.path)] = permissions(route)
        elif isinstance(route, Route):
            for method in route.methods or ():
                served[(method, route.path)] = set()
    for key, text in listed().items():
        assert key in served, f"reference.md lists {key}, which the hub does not serve"
        said = set(PERMISSION.findall(text))
        expected = CHECKED_INSIDE.get(key, served[key])
        assert said == expected, f"{key}: the page says {said or 'none'}, the hub {expected}"


def test_every_websocket_is_listed_and_exists(app: FastAPI) -> None:
    sockets = {
        route.path
        for route in routes(app.routes)
        if isinstance(route, APIWebSocketRoute | WebSocketRoute)
    }
    assert set(SOCKET.findall(PAGE.read_text())) == sockets


def message_types(section: str) -> dict[str, str]:
    """The message types of one ``### ... `/ws/...` `` section, with their direction."""
    text = PAGE.read_text()
    start = text.index(section)
    end = text.find("\n### ", start + 1)
    rows = MESSAGE.findall(text[start : end if end != -1 else None])
    assert rows, f"no messages under {section!r}"
    return dict(rows)


def sources() -> str:
    return "\n".join(p.read_text() for p in (REPO_ROOT / "kai").rglob("*.py"))


@pytest.mark.parametrize(
    ("section", "incoming"),
    [
        ("### The agent socket", set(AGENT_MESSAGE_TYPES)),
        ("### The client socket", set(default_handlers().types) | STARTED_HANDLERS),
        ("### The team channel", set(TEAM_HANDLERS.types)),
    ],
    ids=["agent", "client", "team"],
)
def test_every_message_type_is_listed_and_exists(section: str, incoming: set[str]) -> None:
    types = message_types(section)
    sent_to_hub = {
        t for t, direction in types.items() if direction in ("agent → hub", "client → hub", "both")
    }
    missing = sorted(incoming - sent_to_hub)
    assert not missing, f"{section}: the hub takes {missing}, which the page does not list"
    code = sources()
    unknown = sorted(t for t in types if f'"{t}"' not in code)
    assert not unknown, f"{section}: kai never names the message types {unknown}"


def test_the_reference_links_the_pages_it_names() -> None:
    text = PAGE.read_text()
    for target in re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]+)?\)", text):
        assert (Path(PAGE.parent) / target).exists(), f"reference.md links {target}"
