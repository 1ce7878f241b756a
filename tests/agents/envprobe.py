"""A hosted agent that tells what its environment holds: ``tests.agents.envprobe:agent``."""

from __future__ import annotations

import os
from typing import Any

from kai.sdk import Agent

agent = Agent("envprobe", version="1.0.0")


@agent.command("environ")
async def environ(params: dict[str, Any]) -> dict[str, str]:
    """The agent process's whole environment."""
    return dict(os.environ)
