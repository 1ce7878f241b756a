"""Fixtures: real SQLite and PostgreSQL, a real SMTP server, the hub behind an HTTP client."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from kai.app import create_app
from kai.config import Settings
from kai.container import Container as Hub
from kai.db import Base, migrate
from kai.models import load_all
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api
from tests.services import (
    create_database,
    drop_database,
    free_port,
    plain_dsn,
    postgres_server,
)

TEST_SECRET = "kai-test-signing-key-0123456789-abcdefghijklmnop"


# -- isolation ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Each test leaves logging as it found it: a hub started in-process applies its log level
    to the root logger, ``logs.setup`` replaces the root's handlers, and a worker runs many tests
    in turn, so what one test set must not decide what the next one captures."""
    root = logging.getLogger()
    kept_root = (root.level, list(root.handlers))
    kept = {
        name: (logger.level, logger.disabled, logger.propagate, list(logger.handlers))
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.setLevel(kept_root[0])
    root.handlers[:] = kept_root[1]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        level, disabled, propagate, handlers = kept.get(name, (logging.NOTSET, False, True, []))
        logger.setLevel(level)
        logger.disabled = disabled
        logger.propagate = propagate
        logger.handlers[:] = handlers


# -- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_database(pg_admin_url: str) -> Iterator[str]:
    url = asyncio.run(create_database(pg_admin_url))
    migrate(url)
    yield url
    asyncio.run(drop_database(pg_admin_url, url))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "kai.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


async def _truncate(url: str) -> None:
    load_all()
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs once on SQLite and once on PostgreSQL, from empty tables."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kai.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(_truncate(url))
    return url


# -- mail --------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the loopback SMTP server received."""

    messages: list[Message] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    async def wait_for(self, to: str, *, count: int = 1, timeout: float = 5.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [m for m in self.messages if m["To"] == to]
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"no mail to {to} within {timeout}s; got {len(self.messages)} mails")


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: Mailbox) -> Mailbox:
    smtp_server.messages.clear()
    return smtp_server


# -- the hub -----------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path, mailbox: Mailbox) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET,
        smtp_url=mailbox.url,
        public_base_url="http://hub.test",
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        argon2_time_cost=1,
        argon2_memory_cost=1024,
        argon2_parallelism=1,
        audit_flush_interval=0.05,
        auth_rate_limit=1000,
        registration="open",  # the suite signs people up; tests of the policy set their own
    )


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub


@asynccontextmanager
async def serve_app(app: FastAPI) -> AsyncIterator[Running]:
    """Start ``app`` with its lifespan, behind an in-process HTTP client; stop it on exit."""
    async with LifespanManager(app, startup_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Running(app, client)


Serve = Callable[[FastAPI], AbstractAsyncContextManager[Running]]


@pytest.fixture
def serve() -> Serve:
    """Start an app of the test's own making (custom settings, extra routes) like ``running``."""
    return serve_app


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Running]:
    """The hub, started with its lifespan, behind an in-process HTTP client."""
    async with serve_app(create_app(settings)) as started:
        yield started


@pytest.fixture
def client(running: Running) -> httpx.AsyncClient:
    return running.client


@pytest.fixture
def hub(running: Running) -> Hub:
    return running.hub


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)
