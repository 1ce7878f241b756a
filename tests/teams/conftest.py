"""Fixtures of the coordination tests: those of the agent tests (a hub on a real port, agent
processes) and of the client WebSocket tests (hubs in embedded or Redis mode), by import, and
SDK agents run in this event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.agents.conftest import fast_settings, launcher, people, server, start_server
from tests.realtime.client_support import backing, hubs, mode, shared_redis_url
from tests.teams.support import Crew

__all__ = [
    "backing",
    "crew",
    "fast_settings",
    "hubs",
    "launcher",
    "mode",
    "people",
    "server",
    "shared_redis_url",
    "start_server",
]


@pytest.fixture
async def crew() -> AsyncIterator[Crew]:
    """SDK agents run in this event loop, stopped at the end of the test."""
    started = Crew()
    try:
        yield started
    finally:
        await started.stop()
