"""The OpenAPI schema lists every status a route answers (issue 12): a walk over every operation
with crafted bad input (no token, a token without the permission, malformed and oversized
bodies, bad query values, a NUL in the URL, unknown ids) fails on any status its operation does
not document, and on any 500."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from kai.config import Settings
from tests.conftest import Running
from tests.helpers import Api, bearer

# One database is enough: the schema and the answers do not depend on it.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# Operations whose success ends the caller's own session: called with a throwaway one.
ENDS_SESSION = {("post", "/api/auth/logout"), ("post", "/api/auth/password")}
QUERY_GARBAGE = ["", "x", "-1", "99999999999999999999", "1e999", "\u00e9" * 300]


class Walk:
    def __init__(self, client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
        self.client = client
        self.spec = spec
        self.seen: dict[tuple[str, str], set[int]] = {}
        self.undocumented: list[str] = []

    async def call(
        self, method: str, path: str, template: str, label: str, **kwargs: Any
    ) -> httpx.Response:
        response = await self.client.request(method.upper(), path, **kwargs)
        documented = self.spec["paths"][template][method]["responses"]
        self.seen.setdefault((method, template), set()).add(response.status_code)
        if str(response.status_code) not in documented:
            self.undocumented.append(
                f"{method.upper()} {template} ({label}): {response.status_code} "
                f"{response.text[:160]}"
            )
        return response


def concrete(template: str, value: str = "no-such-id") -> str:
    return re.sub(r"\{[^}]+\}", value, template)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": 64 * 1024})


async def probe_parameters(
    walk: Walk, method: str, template: str, operation: dict[str, Any], admin: dict[str, str]
) -> None:
    """Every query parameter and header set to values it does not take."""
    path = concrete(template)
    for parameter in operation.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        for garbage in QUERY_GARBAGE:
            label = f"{name}={garbage[:20]!r}"
            if where == "query":
                await walk.call(
                    method, path, template, label, headers=admin, params={name: garbage}
                )
            elif where == "header" and garbage.isascii():
                await walk.call(method, path, template, label, headers={**admin, name: garbage})


async def probe_bodies(walk: Walk, method: str, template: str, admin: dict[str, str]) -> None:
    """Bodies that are malformed, of the wrong type or shape, too deep or too large."""
    path = concrete(template)
    as_json = {**admin, "Content-Type": "application/json"}
    bodies: list[tuple[str, dict[str, str], bytes]] = [
        ("not JSON", as_json, b"{not json"),
        ("empty object", as_json, b"{}"),
        ("array", as_json, b"[]"),
        ("null", as_json, b"null"),
        ("deep", as_json, b"[" * 5000 + b"]" * 5000),
        ("huge number", as_json, b'{"a": 1' + b"0" * 5000 + b"}"),
        ("text body", {**admin, "Content-Type": "text/plain"}, b"hello"),
        ("too large", as_json, b"[" + b"1," * 40_000 + b"1]"),
        ("bad length", {**as_json, "Content-Length": "nope"}, b"{}"),
    ]
    for label, headers, body in bodies:
        await walk.call(method, path, template, label, headers=headers, content=body)


def assert_refusals_are_explained(spec: dict[str, Any]) -> None:
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = set(operation["responses"])
            assert "400" in responses, (method, template)
            if method in ("post", "put", "patch"):
                assert {"413", "415"} <= responses, (method, template)
            if operation.get("security"):
                assert {"401", "503"} <= responses, (method, template)


async def test_every_status_an_operation_answers_is_in_the_schema(
    running: Running, api: Api
) -> None:
    started = time.monotonic()
    client = running.client
    spec = (await client.get("/openapi.json")).json()
    admin = bearer(await api.admin_token())
    user = bearer(await api.user_token("walker@example.com"))
    walk = Walk(client, spec)

    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            path = concrete(template)
            # An operation that ends the caller's session gets a session of its own to end.
            own = bearer(await api.admin_token()) if (method, template) in ENDS_SESSION else admin
            await walk.call(method, path, template, "as it is", headers=own)
            await walk.call(method, path, template, "no token")
            await walk.call(method, path, template, "bad token", headers=bearer("x.y.z"))
            await walk.call(method, path, template, "user", headers=user)
            await walk.call(method, path + "?q=%00", template, "NUL", headers=admin)
            await walk.call(method, concrete(template, "%00"), template, "NUL id", headers=admin)
            await probe_parameters(walk, method, template, operation, admin)
            if method in ("post", "put", "patch"):
                await probe_bodies(walk, method, template, admin)

    assert walk.undocumented == []
    assert all(code < 500 for codes in walk.seen.values() for code in codes), walk.seen
    assert len(walk.seen) == sum(len(ops) for ops in spec["paths"].values())  # all reached
    assert_refusals_are_explained(spec)
    assert time.monotonic() - started < 60
