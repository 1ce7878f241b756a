"""Fixtures of the SDK tests: a small real hub of the test's own (``hub``), and the real hub on a
real port from the agent tests (``server``, ``people``) for the documentation's examples."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agents.conftest import fast_settings, people, server
from tests.sdk.support import FakeHub, fake_hub

__all__ = ["fast_settings", "people", "server"]


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """The SDK is what these tests try, not the database: SQLite only, from empty tables."""
    path = tmp_path / "kai.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(autouse=True)
def info_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Let INFO records reach the root logger, as ``kai agent run`` does (restored after)."""
    caplog.set_level(logging.INFO)


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    """The test's hub; every message the agent sent it must have kept to the protocol."""
    async with fake_hub() as started:
        yield started
        assert started.violations == []
