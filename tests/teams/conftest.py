"""Fixtures of the coordination tests: those of the agent tests (a hub on a real port, agent
processes) and of the client WebSocket tests (hubs in embedded or Redis mode), by import."""

from __future__ import annotations

from tests.agents.conftest import fast_settings, launcher, people, server, start_server
from tests.realtime.client_support import backing, hubs, mode, shared_redis_url

__all__ = [
    "backing",
    "fast_settings",
    "hubs",
    "launcher",
    "mode",
    "people",
    "server",
    "shared_redis_url",
    "start_server",
]
