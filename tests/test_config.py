"""Settings from the environment, the signing key, SQLite's durability settings, and the
operational routes: health, readiness, the OpenAPI document and its docs page."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr, ValidationError
from starlette.routing import BaseRoute

from kai.app import create_app
from kai.config import SECRET_FILE, ConfigError, Settings, check_secret
from kai.db import Database
from kai.ops.runtime import RUNTIME_KEYS
from tests.conftest import Running, Serve
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, assert_problem, bearer

GOOD_KEY = "Zq8w-4rT9_pL2mXv7bN3cK6hJ1gF5dS0aQeWyUiOp"


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any KAI_ variable the machine may have set."""
    for name in list(os.environ):
        if name.startswith("KAI_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- reading the environment ---------------------------------------------------------------------


def test_settings_read_kai_variables(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environ.setenv("KAI_HOST", "0.0.0.0")
    environ.setenv("KAI_PORT", "9123")
    environ.setenv("KAI_DATA_DIR", str(tmp_path / "state"))
    environ.setenv("KAI_DATABASE_URL", "postgresql+asyncpg://kai@db.internal/kai")
    environ.setenv("KAI_SECRET_KEY", GOOD_KEY)
    environ.setenv("KAI_REQUIRE_EMAIL_VERIFICATION", "true")
    environ.setenv("KAI_MAX_BODY_BYTES", "4096")
    environ.setenv("KAI_ACCESS_TOKEN_TTL", "60")
    environ.setenv("KAI_ADMIN_EMAIL", "root@example.net")
    environ.setenv("KAI_ADMIN_PASSWORD", "from the environment")
    environ.setenv("PORT", "1")  # no prefix, not kai's
    settings = Settings()
    assert settings.host == "0.0.0.0"
    assert settings.port == 9123
    assert settings.data_dir == tmp_path / "state"
    assert settings.resolved_database_url == "postgresql+asyncpg://kai@db.internal/kai"
    assert settings.signing_key() == GOOD_KEY
    assert settings.require_email_verification is True
    assert settings.max_body_bytes == 4096
    assert settings.access_token_ttl == 60
    assert settings.admin_email == "root@example.net"
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "from the environment"
    # Secrets stay out of reprs and logs.
    assert GOOD_KEY not in repr(settings)
    assert "from the environment" not in repr(settings)


def test_bad_values_are_refused(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("KAI_PORT", "seventy")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    environ.setenv("KAI_PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()
    environ.delenv("KAI_PORT")
    environ.setenv("KAI_MAX_BODY_BYTES", "0")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        Settings()


def test_default_database_is_sqlite_in_the_data_dir(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environ.chdir(tmp_path)
    assert Settings().resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'kai.db'}"
    environ.setenv("KAI_DATA_DIR", str(tmp_path / "elsewhere"))
    url = Settings().resolved_database_url
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'elsewhere' / 'kai.db'}"


def test_comma_separated_lists(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("KAI_WS_ALLOWED_ORIGINS", "https://a.example, https://b.example:8443 ,")
    environ.setenv("KAI_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,2001:db8::/32")
    settings = Settings()
    assert settings.ws_allowed_origins == ["https://a.example", "https://b.example:8443"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
    assert [str(n) for n in settings.proxy_networks] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "2001:db8::/32",
    ]
    environ.setenv("KAI_TRUSTED_PROXIES", "")
    environ.setenv("KAI_WS_ALLOWED_ORIGINS", "https://only.example")
    settings = Settings()
    assert settings.trusted_proxies == []
    assert settings.proxy_networks == ()
    assert settings.ws_allowed_origins == ["https://only.example"]
    assert Settings(trusted_proxies="127.0.0.1").trusted_proxies == ["127.0.0.1"]


@pytest.mark.parametrize("proxies", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8,300.1.1.1"])
def test_bad_proxy_network_is_refused(environ: pytest.MonkeyPatch, proxies: str) -> None:
    environ.setenv("KAI_TRUSTED_PROXIES", proxies)
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings()


# -- the signing key -------------------------------------------------------------------------------


def test_secret_key_is_generated_once(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    key = Settings(data_dir=data).signing_key()
    path = data / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key
    assert check_secret(key) == key
    assert Settings(data_dir=data).signing_key() == key
    assert Settings(data_dir=tmp_path / "other").signing_key() != key
    # A key that is given wins over the file, and leaves it alone.
    assert Settings(data_dir=data, secret_key=GOOD_KEY).signing_key() == GOOD_KEY
    assert path.read_text().strip() == key


@pytest.mark.parametrize(
    "key",
    [
        "changeme",
        "secret",
        "SECRET",
        " changeme ",
        "short-but-random-9f3k",
        "a" * 64,
        "abababababababababababababababab",
    ],
)
def test_weak_secret_keys_are_refused(environ: pytest.MonkeyPatch, key: str) -> None:
    with pytest.raises(ConfigError):
        check_secret(key)
    environ.setenv("KAI_SECRET_KEY", key)
    with pytest.raises(ConfigError, match="KAI_SECRET_KEY"):
        Settings().signing_key()


def test_weak_secret_file_is_refused(environ: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("changeme\n")
    with pytest.raises(ConfigError, match="well-known"):
        Settings(data_dir=tmp_path).signing_key()


async def test_hub_with_a_weak_key_does_not_start(
    environ: pytest.MonkeyPatch, tmp_path: Path, serve: Serve
) -> None:
    settings = _default_settings(tmp_path).model_copy(update={"secret_key": SecretStr("changeme")})
    with pytest.raises(ConfigError):
        async with serve(create_app(settings)):
            pass


# -- a hub on its defaults: SQLite in the data dir, a generated key ----------------------------


def _default_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        audit_flush_interval=0.05,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
    )


async def _pragma(started: Running, name: str) -> Any:
    async with started.hub.db.engine.connect() as conn:
        return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()


async def test_defaults_sqlite_pragmas_and_key_reuse(
    environ: pytest.MonkeyPatch, tmp_path: Path, serve: Serve
) -> None:
    data = tmp_path / "data"
    async with serve(create_app(_default_settings(data))) as started:
        assert started.hub.db.url == f"sqlite+aiosqlite:///{data / 'kai.db'}"
        assert (data / "kai.db").is_file()
        assert stat.S_IMODE((data / SECRET_FILE).stat().st_mode) == 0o600
        assert await _pragma(started, "journal_mode") == "wal"
        assert await _pragma(started, "synchronous") == 2  # FULL
        assert await _pragma(started, "foreign_keys") == 1
        assert await _pragma(started, "busy_timeout") == 30000
        login = await Api(started.client).login(ADMIN_EMAIL, ADMIN_PASSWORD)
        token = login["tokens"]["accessToken"]["token"]
    key = (data / SECRET_FILE).read_text()

    # The next start signs with the same key: the token from before still works.
    async with serve(create_app(_default_settings(data))) as started:
        response = await started.client.get("/api/auth/session", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["user"]["email"] == ADMIN_EMAIL
    assert (data / SECRET_FILE).read_text() == key

    # A hub with another key does not accept it.
    (data / SECRET_FILE).unlink()
    async with serve(create_app(_default_settings(data))) as started:
        response = await started.client.get("/api/auth/session", headers=bearer(token))
        assert_problem(response, 401, "Invalid or expired session")


# -- operational routes ------------------------------------------------------------------------


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["version"], str)


async def test_ready(running: Running) -> None:
    response = await running.client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}

    # A database that does not answer makes the hub not ready, with a problem saying which.
    hub = running.hub
    gone = Database("postgresql+asyncpg://kai@127.0.0.1:9/nowhere")
    try:
        with patch.object(hub.db, "ping", gone.ping):
            response = await running.client.get("/ready")
    finally:
        await gone.dispose()
    assert_problem(response, 503, "Not ready")
    assert response.json()["checks"] == {"database": "unavailable", "storage": "ok"}
    assert (await running.client.get("/ready")).status_code == 200


# Routes whose every documented failure is the Problem model. (FastAPI documents a 422 of its
# own shape on routes that do not declare one; routes elsewhere still do that.)
STRICT_DOCS = ("/health", "/ready", "/api/auth", "/api/users", "/api/audit")


def _strict_docs(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in STRICT_DOCS)


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route of the app, through included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _api_routes(included.routes)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


async def test_openapi_documents_every_route(running: Running) -> None:
    response = await running.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "kai"
    routes = [r for r in _api_routes(running.app.routes) if r.include_in_schema]
    assert len(routes) >= 12
    for route in routes:
        for method in route.methods or ():
            assert method.lower() in spec["paths"].get(route.path, {}), (method, route.path)

    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["properties"])
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            responses = operation["responses"]
            successes = [code for code in responses if code.startswith("2")]
            assert len(successes) == 1, where
            content = responses[successes[0]]["content"]
            if "application/json" in content:
                body_schema = content["application/json"]["schema"]
                assert _resolve(spec, body_schema).get("properties"), where
            else:  # a stream or a file: its type and what it holds are described
                streams = {"text/event-stream", "application/octet-stream", "text/plain"}
                assert set(content) <= streams, where
                assert len(responses[successes[0]]["description"]) > 20, where
            failures = {code: r for code, r in responses.items() if code[0] in "45"}
            assert failures or path in ("/health", "/metrics"), f"{where} documents no failure"
            if path.startswith("/api/"):
                assert any(code.startswith("4") for code in failures), where
            for code, failure in failures.items():
                schemas = [c["schema"] for c in failure["content"].values() if "schema" in c]
                assert schemas, (where, code)
                if _strict_docs(path):
                    assert "application/problem+json" in failure["content"], (where, code)
                    refs = [schema.get("$ref", "") for schema in schemas]
                    assert any(ref.endswith("/Problem") for ref in refs), (where, code)
            if "requestBody" in operation:
                bodies = operation["requestBody"]["content"]
                request = (bodies.get("application/json") or bodies["multipart/form-data"])[
                    "schema"
                ]
                options = [_resolve(spec, s) for s in request.get("anyOf", [request])]
                assert any(o.get("properties") for o in options), where


async def test_docs_page(client: httpx.AsyncClient) -> None:
    """Swagger UI from this origin only, under a CSP without inline script; /redoc leads there."""
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "default-src 'none'" in csp
    assert "<script>" not in response.text  # no inline script: every one has a src
    urls = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert urls
    assert all(url.startswith("/docs/assets/") for url in urls), urls
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-security-policy"] == csp
        assert asset.content
    start = await client.get("/docs/assets/start.js")
    assert "'/openapi.json'" in start.text
    assert (await client.get("/docs/assets/index.html")).status_code == 404
    assert (await client.get("/docs/assets/..%2F..%2Fapp.py")).status_code == 404
    moved = await client.get("/redoc")
    assert (moved.status_code, moved.headers["location"]) == (308, "/docs")


def test_every_runtime_setting_has_both_bounds_and_the_environment_is_held_to_them(
    environ: pytest.MonkeyPatch,
) -> None:
    for key in RUNTIME_KEYS:
        info = Settings.model_fields[key]
        if info.annotation in (int, float):
            kinds = {type(item).__name__ for item in info.metadata}
            assert {"Ge", "Le"} <= kinds, key
    for name, value in (("STREAM_TTL", "1e300"), ("TASK_LEASE_SECONDS", "nan"), ("LOG_LEVEL", "x")):
        environ.setenv(f"KAI_{name}", value)
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
        environ.delenv(f"KAI_{name}")
