"""What every part is built on: the settings, the database and this node's id, and the route
dependencies that hand them to routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from kai.config import Settings
from kai.db import Database, new_id
from kai.kit.clock import Clock, SystemClock
from kai.kit.wiring import dependency, provided


@dataclass(slots=True)
class Core:
    settings: Settings
    db: Database
    node_id: str = field(default_factory=new_id)
    clock: Clock = field(default_factory=SystemClock)


SettingsDep = Annotated[Settings, Depends(dependency("settings", Settings))]
DatabaseDep = Annotated[Database, Depends(dependency("db", Database))]


async def node_id_of(connection: HTTPConnection) -> str:
    return cast(str, provided(connection, "node_id"))


NodeIdDep = Annotated[str, Depends(node_id_of)]
