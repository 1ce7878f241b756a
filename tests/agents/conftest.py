"""Fixtures of the agent tests: a hub on a real port with fast heartbeats, and agent processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

import pytest

from kai.config import Settings
from kai.kit.clock import Clock
from tests.agents.processes import Launcher
from tests.agents.support import HubServer, People, hub_server
from tests.services import free_port

HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0
RESTART_GRACE = 5.0


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    """The test settings with quick heartbeats, on a free port of this machine."""
    return settings.model_copy(
        update={
            "port": free_port(),
            "agent_heartbeat_interval": HEARTBEAT_INTERVAL,
            "agent_heartbeat_timeout": HEARTBEAT_TIMEOUT,
            "agent_restart_grace": RESTART_GRACE,
        }
    )


class ServerStarter(Protocol):
    def __call__(self, **overrides: Any) -> AbstractAsyncContextManager[HubServer]: ...


@pytest.fixture
def start_server(fast_settings: Settings) -> ServerStarter:
    """``async with start_server(demo=True) as server:`` serves a hub with those settings
    (and ``clock=``, a clock the test moves on)."""

    def starter(
        clock: Clock | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[HubServer]:
        return hub_server(fast_settings.model_copy(update=overrides), clock=clock)

    return starter


@pytest.fixture
async def server(fast_settings: Settings) -> AsyncIterator[HubServer]:
    """The hub, served by uvicorn on a real port."""
    async with hub_server(fast_settings) as started:
        yield started


@pytest.fixture
def people(server: HubServer) -> People:
    return People(server)


@pytest.fixture
def launcher(server: HubServer, tmp_path: Path) -> Iterator[Launcher]:
    """Starts ``kai agent run`` processes against ``server``; kills them all afterwards."""
    started = Launcher(server.ws_url, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()
