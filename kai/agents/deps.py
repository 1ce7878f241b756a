"""Route dependencies of the agents part."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from kai.agents.live import LiveAgents
from kai.agents.relay import Relay
from kai.agents.service import Registry
from kai.kit.wiring import dependency

RegistryDep = Annotated[Registry, Depends(dependency("agents", Registry))]
LiveDep = Annotated[LiveAgents, Depends(dependency("live", LiveAgents))]
RelayDep = Annotated[Relay, Depends(dependency("relay", Relay))]
