"""Fixtures of the auth tests: a hub started with settings of the test's choosing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from asgi_lifespan import LifespanManager

from kai.app import create_app
from kai.config import Settings
from kai.kit.clock import Clock
from tests.conftest import Running

Peer = tuple[str, int]
LOCAL_PEER: Peer = ("127.0.0.1", 123)


@dataclass
class Started(Running):
    """A running hub that can also be reached from other client addresses."""

    asgi: Any = None  # the app as the lifespan manager serves it (with the lifespan state)

    def connect(self, peer: Peer) -> httpx.AsyncClient:
        """A client whose requests come from ``peer``; use it with ``async with``."""
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False, client=peer)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@asynccontextmanager
async def start_hub(
    settings: Settings, *, peer: Peer = LOCAL_PEER, clock: Clock | None = None
) -> AsyncIterator[Started]:
    """Start a hub with ``settings`` (keeping time by ``clock``), as the ``running`` fixture
    does; stop it on exit."""
    app = create_app(settings, clock=clock)
    async with LifespanManager(app, startup_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Started(app, client, manager.app)


class HubStarter(Protocol):
    def __call__(
        self, clock: Clock | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[Started]: ...


@pytest.fixture
def start(settings: Settings) -> HubStarter:
    """``async with start(auth_rate_limit=3) as hub:`` runs a hub with those settings changed
    (and ``clock=``, a clock the test moves on)."""

    def starter(
        clock: Clock | None = None, **overrides: Any
    ) -> AbstractAsyncContextManager[Started]:
        return start_hub(settings.model_copy(update=overrides), clock=clock)

    return starter
