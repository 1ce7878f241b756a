"""Every failure is problem+json: malformed bodies on every route, limits, routing, crashes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from kai.app import create_app
from kai.config import Settings
from tests.conftest import Serve
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, assert_problem, bearer

PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"
SMALL_BODY_LIMIT = 2048


# -- the routes, as the OpenAPI schema lists them ----------------------------------------------


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


@dataclass(frozen=True)
class BodyRoute:
    method: str
    path: str  # path parameters filled in
    schema: dict[str, Any]  # the body's object schema, resolved
    required: bool  # whether the body itself may be left out


def _body_routes(spec: dict[str, Any]) -> list[BodyRoute]:
    """Every route that takes a JSON body, as the OpenAPI schema describes it."""
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            request_body = operation.get("requestBody", {})
            content = request_body.get("content", {})
            if "application/json" not in content:
                continue
            concrete = path
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    concrete = concrete.replace("{" + param["name"] + "}", PLACEHOLDER_ID)
            schema = _resolve(spec, content["application/json"]["schema"])
            options = [_resolve(spec, s) for s in schema.get("anyOf", [schema])]
            objects = [s for s in options if s.get("type") == "object"]
            assert len(objects) == 1, (method, path, schema)
            required = bool(request_body.get("required")) and len(options) == 1
            found.append(BodyRoute(method, concrete, objects[0], required))
    return found


def _types(spec: dict[str, Any], schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a field takes; None when it takes anything."""
    schema = _resolve(spec, schema)
    options = [_resolve(spec, s) for s in schema.get("anyOf", schema.get("oneOf", [schema]))]
    types: set[str] = set()
    for option in options:
        if "type" in option:
            types.add(option["type"])
        elif "enum" in option or "const" in option:
            types.add("string")
        else:
            return None
    return types


def _wrong_value(types: set[str]) -> Any:
    """A JSON value that no field of these types accepts."""
    return 12345 if "array" in types else [True]


async def _spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


def assert_field_errors(response: httpx.Response, fields: set[str]) -> None:
    """A 422 problem whose ``errors`` name (at least) every one of ``fields``."""
    assert_problem(response, 422)
    errors = response.json()["errors"]
    assert isinstance(errors, list)
    assert errors
    for error in errors:
        assert set(error) == {"field", "message"}, error
        assert isinstance(error["field"], str)
        assert isinstance(error["message"], str)
        assert error["message"]
    named = {error["field"] for error in errors}
    for field in fields:
        assert any(n == field or n.startswith(field + ".") for n in named), (field, named)


def assert_not_a_crash(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_problem(response, response.status_code)


# -- malformed bodies, route by route ----------------------------------------------------------


async def test_every_body_route_is_listed(client: httpx.AsyncClient) -> None:
    routes = {(r.method, r.path): r for r in _body_routes(await _spec(client))}
    assert routes[("post", "/api/auth/login")].required
    assert routes[("put", f"/api/users/{PLACEHOLDER_ID}")].schema["properties"]


async def test_non_json_bodies_are_refused(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    for route in _body_routes(await _spec(client)):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = dict(auth)
            if content_type:
                headers["Content-Type"] = content_type
            response = await client.request(
                route.method, route.path, content=b"email=a", headers=headers
            )
            assert response.status_code in (400, 415), (route, response.text)
            assert_problem(response, response.status_code)
        response = await client.request(
            route.method,
            route.path,
            content=b'{"credentials": {',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert_problem(response, 400)


async def test_json_that_is_not_an_object(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    for route in _body_routes(await _spec(client)):
        # `null` is a body left out, which a route with an optional body takes.
        for value in [[1, 2], "text", 42, True] + ([None] if route.required else []):
            response = await client.request(route.method, route.path, json=value, headers=auth)
            assert response.status_code in (400, 422), (route, value, response.text)
            if response.status_code == 422:
                assert_field_errors(response, set())
            else:
                assert_problem(response, 400)


async def test_wrong_types(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    spec = await _spec(client)
    checked = 0
    for route in _body_routes(spec):
        types = {name: _types(spec, prop) for name, prop in route.schema["properties"].items()}
        body = {name: _wrong_value(t) for name, t in types.items() if t is not None}
        if not body:
            continue
        checked += 1
        response = await client.request(route.method, route.path, json=body, headers=auth)
        assert_field_errors(response, set(body))
    assert checked >= 5


async def test_missing_fields(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    checked = 0
    for route in _body_routes(await _spec(client)):
        required = set(route.schema.get("required", []))
        if not required:
            continue
        checked += 1
        response = await client.request(route.method, route.path, json={}, headers=auth)
        assert_field_errors(response, required)
        for error in response.json()["errors"]:
            assert error["message"] == "Field required"
    assert checked >= 5


async def test_missing_nested_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/login", json={"credentials": {"email": "a@b.co"}})
    assert_field_errors(response, {"credentials.password"})
    response = await client.post("/api/auth/register", json={"userData": {"password": "x" * 9}})
    assert_field_errors(response, {"userData.email"})


async def test_unknown_fields(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    for route in _body_routes(await _spec(client)):
        response = await client.request(
            route.method, route.path, json={"surpriseField": 1}, headers=auth
        )
        assert_field_errors(response, {"surpriseField"})
    nested = {"credentials": {"email": "a@b.co", "password": "whatever1", "otp": "1"}}
    response = await client.post("/api/auth/login", json=nested)
    assert_field_errors(response, {"credentials.otp"})


async def test_field_errors_name_the_wire_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register", json={"userData": {"email": "not-an-email", "password": "short"}}
    )
    assert_field_errors(response, {"userData.email", "userData.password"})


# -- body limits ---------------------------------------------------------------------------------


@pytest.fixture
async def small_limit(settings: Settings, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"max_body_bytes": SMALL_BODY_LIMIT}))
    async with serve(app) as started:
        yield started.client


async def test_oversized_body_with_content_length(small_limit: httpx.AsyncClient) -> None:
    spec = await _spec(small_limit)
    padding = "x" * SMALL_BODY_LIMIT
    for route in _body_routes(spec):
        response = await small_limit.request(route.method, route.path, json={"padding": padding})
        assert int(response.request.headers["content-length"]) > SMALL_BODY_LIMIT
        assert_problem(response, 413, f"Request body is larger than {SMALL_BODY_LIMIT} bytes")


async def test_oversized_chunked_body(small_limit: httpx.AsyncClient) -> None:
    spec = await _spec(small_limit)
    token = (await Api(small_limit).login(ADMIN_EMAIL, ADMIN_PASSWORD))["tokens"]["accessToken"]

    for route in _body_routes(spec):

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"padding": "'
            for _ in range(2 * SMALL_BODY_LIMIT // 256):
                yield b"x" * 256
            yield b'"}'

        response = await small_limit.request(
            route.method,
            route.path,
            content=chunks(),
            headers={**bearer(token["token"]), "Content-Type": "application/json"},
        )
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_problem(response, 413, f"Request body is larger than {SMALL_BODY_LIMIT} bytes")


async def test_chunked_body_within_the_limit_is_read(small_limit: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"credentials": {"email": "nobody@example.com",'
        yield b' "password": "not the password"}}'

    response = await small_limit.post(
        "/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401, "Authentication failed")


async def test_bad_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "two"},
    )
    assert_problem(response, 400)


# -- routing errors, crashes, request ids ------------------------------------------------------


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    for path in ("/api/nothing-here", "/nope", "/api/users/x/y/z"):
        response = await client.get(path)
        assert_problem(response, 404)


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    spec = await _spec(client)
    for path, operations in spec["paths"].items():
        concrete = path.replace("{", "").replace("}", "")
        unused = [m for m in ("get", "post", "put", "delete", "patch") if m not in operations]
        assert unused
        response = await client.request(unused[0], concrete)
        assert_problem(response, 405)
        assert response.json()["detail"] == "Method not allowed on this route"
        # Starlette names the methods of the first route that matches the path.
        allowed = {m.strip().lower() for m in response.headers["allow"].split(",")}
        assert allowed
        assert allowed <= {*operations, "head"}, (path, allowed)


async def test_nul_in_the_url_is_refused(client: httpx.AsyncClient, api: Api) -> None:
    auth = bearer(await api.admin_token())
    for url in ("/api/users?q=%00", "/api/audit?permission=a%00b", "/api/users/%00"):
        response = await client.get(url, headers=auth)
        assert_problem(response, 400, "Request URL contains a NUL character")
    response = await client.put("/api/users/%00", json={"role": "user"}, headers=auth)
    assert_problem(response, 400, "Request URL contains a NUL character")
    # What was refused never reached the audit log, whose writer still works.
    response = await client.get("/api/audit", headers=auth)
    assert response.status_code == 200


async def test_control_characters_in_a_name_are_refused(client: httpx.AsyncClient) -> None:
    for name in ("nul\u0000byte", "bell\u0007", "new\nline"):
        body = {"userData": {"email": "ctl@example.com", "password": "long enough", "name": name}}
        response = await client.post("/api/auth/register", json=body)
        assert_field_errors(response, {"userData.name"})
    body = {"userData": {"email": "ctl@example.com", "password": "long enough", "name": "Zoë"}}
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text


async def test_problem_has_the_rfc_9457_members(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/auth/session")
    assert_problem(response, 401, "Invalid or expired session")
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == "Unauthorized"


def _crashing_app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    async def boom() -> dict[str, str]:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/api/test/boom", boom, methods=["GET"])
    return app


async def test_unhandled_error_is_a_500_problem(
    settings: Settings, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(_crashing_app(settings)) as started:
        with caplog.at_level(logging.ERROR, logger="kai"):
            response = await started.client.get(
                "/api/test/boom", headers={"X-Request-ID": "trace-me-42"}
            )
    assert_problem(response, 500, "Internal server error")
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "requestId"}
    assert body["requestId"] == "trace-me-42"
    assert response.headers["x-request-id"] == "trace-me-42"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    records = [r for r in caplog.records if "trace-me-42" in r.getMessage()]
    http = logging.getLogger("kai.http")
    assert records, (
        [r.getMessage() for r in caplog.records],
        http.disabled,
        http.getEffectiveLevel(),
        logging.getLogger().handlers,
    )
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
    assert getattr(records[0], "request_id", None) == "trace-me-42"


async def test_unhandled_error_gets_a_generated_request_id(
    settings: Settings, serve: Serve
) -> None:
    async with serve(_crashing_app(settings)) as started:
        response = await started.client.get("/api/test/boom")
    assert_problem(response, 500)
    request_id = response.json()["requestId"]
    assert len(request_id) >= 16
    assert response.headers["x-request-id"] == request_id


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc.DEF-123_x"})
    assert response.headers["x-request-id"] == "abc.DEF-123_x"
    response = await client.get("/api/nothing", headers={"X-Request-ID": "nf-1"})
    assert response.headers["x-request-id"] == "nf-1"
    # An id that could smuggle anything into logs or headers is replaced, not echoed.
    for unsafe in ("has space", "x" * 65, "semi;colon"):
        response = await client.get("/health", headers={"X-Request-ID": unsafe})
        echoed = response.headers["x-request-id"]
        assert echoed != unsafe
        assert echoed.isalnum()
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert first != second


# -- random bodies ---------------------------------------------------------------------------------

# Text as clients may send it: NULs (PostgreSQL refuses them) and lone surrogates included.
CHARACTERS = st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff", "\u202e"])
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(CHARACTERS, max_size=40)
    | st.emails()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(["email", "password", "name", "extra", ""])


def _shaped(outer: str) -> st.SearchStrategy[Any]:
    """Bodies near the real shape, so that validation gets past the first level."""
    text = st.text(CHARACTERS, min_size=8, max_size=30)
    inner = st.dictionaries(FIELDS, JSON_VALUES | text | st.emails(), max_size=4)
    return st.fixed_dictionaries({outer: inner}) | st.dictionaries(
        st.sampled_from([outer, "other"]), JSON_VALUES | inner, max_size=2
    )


LOGIN_BODIES = JSON_VALUES | _shaped("credentials")
REGISTER_BODIES = JSON_VALUES | _shaped("userData")
JSON = {"Content-Type": "application/json"}


def _encode(body: Any) -> bytes:
    # json, not orjson: it writes lone surrogates and other odd text as escapes, as a client may.
    return json.dumps(body).encode()


FUZZ = hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=LOGIN_BODIES)
async def test_random_login_bodies(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/api/auth/login", content=_encode(body), headers=JSON)
    assert_not_a_crash(response)


@FUZZ
@given(body=REGISTER_BODIES)
async def test_random_register_bodies(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/api/auth/register", content=_encode(body), headers=JSON)
    assert_not_a_crash(response)
