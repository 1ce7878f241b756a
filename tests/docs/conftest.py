"""Fixtures of the documentation tests: a hub hosting the demo agent, in a directory laid out
like the clone where a reader runs ``make run``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kai.config import Settings
from tests.agents.conftest import fast_settings
from tests.agents.processes import child_env
from tests.agents.support import HubServer, eventually, hub_server
from tests.conftest import _truncate as truncate
from tests.docs.runner import hub_directory
from tests.helpers import ADMIN_PASSWORD

__all__ = ["fast_settings"]


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The pages run on SQLite, the embedded default a reader starts with (on both databases
    they would take twice the time for little more); a test that needs PostgreSQL asks for it
    with ``@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)``."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kai.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(truncate(url))
    return url


@dataclass
class DocsHub:
    server: HubServer
    directory: Path  # the session's working directory: .venv and data/ as in a clone
    database: str  # "sqlite" or "postgresql"
    env: dict[str, str]  # the environment of the pages' shell sessions


@pytest.fixture
async def docs_hub(
    fast_settings: Settings, database_url: str, tmp_path: Path
) -> AsyncIterator[DocsHub]:
    """The hub of the pages' examples, hosting the demo agent (online when this yields)."""
    directory = hub_directory(tmp_path / "hub")
    data = directory / "data"
    env = child_env(PASSWORD=ADMIN_PASSWORD, COLUMNS="200", CURL_HOME=str(directory))
    # The signing key is generated into data/, as on a first `make run`, so that the pages'
    # `kai` commands read the same one; stream URLs come from the request, as without
    # KAI_PUBLIC_BASE_URL.
    overrides: dict[str, object] = {
        "data_dir": data,
        "secret_key": None,
        "public_base_url": None,
        "demo": True,
    }
    if database_url.startswith("sqlite"):
        database = "sqlite"
        shutil.copy(database_url.split(":///", 1)[1], data / "kai.db")
        overrides["database_url"] = None  # data/kai.db, the default
    else:
        database = "postgresql"
        env["KAI_DATABASE_URL"] = database_url
    async with hub_server(fast_settings.model_copy(update=overrides)) as server:

        async def demo_online() -> bool:
            return any(live.ready for live in server.hub.live.all())

        await eventually(demo_online, 30, what="the demo agent online")
        yield DocsHub(server, directory, database, env)
