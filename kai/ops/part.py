"""The ops part: runtime settings, health and readiness, metrics, the services of this node,
and the API docs."""

from __future__ import annotations

from dataclasses import dataclass, field

from kai.core import Core
from kai.kit.wiring import Wiring
from kai.ops import apidocs_routes, config_routes, routes, service_routes
from kai.ops.runtime import RuntimeConfig
from kai.protocol.control import ConfigChanged

ROUTERS = (routes.router, apidocs_routes.router, config_routes.router, service_routes.router)


@dataclass(slots=True)
class Ops:
    runtime: RuntimeConfig = field(repr=False)


def register(core: Core, wiring: Wiring) -> Ops:
    """Registered first: the other parts read the runtime settings it loads before they start."""
    runtime = RuntimeConfig(core.settings, core.db)
    wiring.provide(runtime=runtime)
    wiring.on_control(ConfigChanged, runtime.on_config_changed)
    wiring.starting(runtime.reload)
    return Ops(runtime=runtime)
